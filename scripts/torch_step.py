"""The identical optimisation step in PyTorch, for `stylize bench --compare-torch`.

Same network (VGG19's 16 convolutions, max pooling, to relu5_1), same losses (content at
relu4_2, Grams at relu1_1..relu5_1, total variation, weights 5 / 100 / 1e-3) and an Adam
update, float32 on the CPU. Weights are random: speed does not depend on their values.
Prints one JSON object per size: {"size", "forward_s", "step_s", "peak_rss_mib"}, plus
"peak_gpu_mib" (the caching allocator's peak reservation) on a GPU.
Usage: torch_step.py SIZE [SIZE ...] [--repeats N] [--threads N] [--device cpu|cuda:N]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

BLOCKS = [(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]


def make_convs(device):
    convs, c_in = [], 3
    for c_out, n in BLOCKS:
        for _ in range(n):
            w = torch.randn(c_out, c_in, 3, 3) * (2.0 / (9 * c_in)) ** 0.5
            convs.append((w.to(device), torch.zeros(c_out, device=device)))
            c_in = c_out
    return convs


def features(x, convs):
    """ReLU outputs by name, to relu5_1."""
    out, i = {}, 0
    for b, (_, n) in enumerate(BLOCKS, start=1):
        if b > 1:
            x = F.max_pool2d(x, 2)
        for c in range(1, n + 1):
            w, bias = convs[i]
            i += 1
            x = F.relu(F.conv2d(x, w, bias, padding=1))
            out[f"relu{b}_{c}"] = x
            if (b, c) == (5, 1):
                return out
    return out


def gram(f):
    _, c, h, w = f.shape
    f = f.reshape(c, h * w)
    return f @ f.t() / (c * h * w)


STYLE = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


def peak_rss_mib():
    """VmHWM of this process (ru_maxrss would carry the parent's peak across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def median(samples):
    return sorted(samples)[len(samples) // 2]


def measure(size, repeats, convs, device):
    p = (torch.randn(1, 3, size, size) * 60).to(device)
    s = (torch.randn(1, 3, size, size) * 60).to(device)
    on_gpu = device.type == "cuda"

    def sync():
        if on_gpu:
            torch.cuda.synchronize(device)
    with torch.no_grad():
        target_p = features(p, convs)["relu4_2"]
        target_s = {k: gram(v) for k, v in features(s, convs).items() if k in STYLE}

    def forward():
        with torch.no_grad():
            f = features(s, convs)
            [gram(f[k]) for k in STYLE]

    x = (p + 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=10)

    def step():
        opt.zero_grad()
        f = features(x, convs)
        lc = ((f["relu4_2"] - target_p) ** 2).mean()
        ls = sum(((gram(f[k]) - target_s[k]) ** 2).mean() for k in STYLE)
        tv = ((x[:, :, 1:, :] - x[:, :, :-1, :]) ** 2).sum() + ((x[:, :, :, 1:] - x[:, :, :, :-1]) ** 2).sum()
        loss = 5 * lc + 100 * ls + 1e-3 * tv
        loss.backward()
        opt.step()

    def timed(fn):
        fn()
        sync()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync()
            samples.append(time.perf_counter() - start)
        return median(samples)

    row = {
        "size": size,
        "forward_s": timed(forward),
        "step_s": timed(step),
        "peak_rss_mib": peak_rss_mib(),
    }
    if on_gpu:
        row["peak_gpu_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", type=int, nargs="+")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    convs = make_convs(device)
    for size in args.sizes:
        print(json.dumps(measure(size, args.repeats, convs, device)), flush=True)


if __name__ == "__main__":
    main()
