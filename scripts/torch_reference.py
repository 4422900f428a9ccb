"""PyTorch references for `stylize bench`, in two subcommands.

`step SIZE [SIZE ...] [--repeats N] [--threads N] [--device cpu|cuda:N]` (for
`--compare-torch`): the identical optimisation step, timed. Same network (VGG19's 16
convolutions, max pooling, to relu5_1), same losses (content at relu4_2, Grams at
relu1_1..relu5_1, total variation, weights 5 / 100 / 1e-3) and an Adam update, float32.
Weights are random: speed does not depend on their values. Prints one JSON object per size:
{"size", "forward_s", "step_s", "peak_rss_mib"}, plus "peak_gpu_mib" (the caching
allocator's peak reservation) on a GPU.

`gatys WEIGHTS INPUTS OUT [--iterations N] [--threads N]` (for `--quality`): a plain Gatys
run with the contract's network and losses on the real weights, float32 on the CPU,
optimised by `torch.optim.LBFGS` with its defaults for this problem (lr 1, history 100, no
line search, no early stop) from the content image. Inputs come from stylize so both sides
start from the same pixels: the weights file `stylize weights fetch` writes and a
safetensors file with `content` and `style` in network input space. Writes the optimised
image (input space, float32) as safetensors `result` and prints one JSON line:
{"targets_s", "optimise_s", "loss", "iterations", "peak_rss_mib"}.

Needs only torch (no numpy, no safetensors package).
"""
import argparse
import json
import struct
import time

import torch
import torch.nn.functional as F

BLOCKS = [(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]
STYLE = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
CONTENT = "relu4_2"
ALPHA, BETA, GAMMA = 5.0, 100.0, 1e-3


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


def total_loss(x, f, target_c, target_s):
    """The contract's loss of image `x` with features `f`."""
    lc = ((f[CONTENT] - target_c) ** 2).mean()
    ls = sum(((gram(f[k]) - target_s[k]) ** 2).mean() for k in STYLE)
    tv = ((x[:, :, 1:, :] - x[:, :, :-1, :]) ** 2).sum() + (
        (x[:, :, :, 1:] - x[:, :, :, :-1]) ** 2
    ).sum()
    return ALPHA * lc + BETA * ls + GAMMA * tv


def peak_rss_mib():
    """VmHWM of this process (ru_maxrss would carry the parent's peak across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def median(samples):
    return sorted(samples)[len(samples) // 2]


# --- step ---


def random_convs(device):
    convs, c_in = [], 3
    for c_out, n in BLOCKS:
        for _ in range(n):
            w = torch.randn(c_out, c_in, 3, 3) * (2.0 / (9 * c_in)) ** 0.5
            convs.append((w.to(device), torch.zeros(c_out, device=device)))
            c_in = c_out
    return convs


def measure_step(size, repeats, convs, device):
    p = (torch.randn(1, 3, size, size) * 60).to(device)
    s = (torch.randn(1, 3, size, size) * 60).to(device)
    on_gpu = device.type == "cuda"

    def sync():
        if on_gpu:
            torch.cuda.synchronize(device)

    with torch.no_grad():
        target_c = features(p, convs)[CONTENT]
        target_s = {k: gram(v) for k, v in features(s, convs).items() if k in STYLE}

    def forward():
        with torch.no_grad():
            f = features(s, convs)
            [gram(f[k]) for k in STYLE]

    x = (p + 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=10)

    def step():
        opt.zero_grad()
        total_loss(x, features(x, convs), target_c, target_s).backward()
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


def run_step(args):
    torch.manual_seed(0)
    device = torch.device(args.device)
    convs = random_convs(device)
    for size in args.sizes:
        print(json.dumps(measure_step(size, args.repeats, convs, device)), flush=True)


# --- gatys ---


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    base = 8 + length
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        raw = bytearray(data[base + start : base + end])
        tensors[name] = torch.frombuffer(raw, dtype=torch.float32).reshape(info["shape"])
    return tensors


def write_safetensors(path, name, tensor):
    values = tensor.detach().contiguous().to(torch.float32).flatten().tolist()
    raw = struct.pack(f"<{len(values)}f", *values)
    header = json.dumps(
        {name: {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [0, len(raw)]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        f.write(raw)


def load_convs(path):
    weights = read_safetensors(path)
    convs = []
    for b, (_, n) in enumerate(BLOCKS, start=1):
        for c in range(1, n + 1):
            convs.append((weights[f"conv{b}_{c}.weight"], weights[f"conv{b}_{c}.bias"]))
    return convs


def run_gatys(args):
    convs = load_convs(args.weights)
    inputs = read_safetensors(args.inputs)
    content, style = inputs["content"], inputs["style"]

    start = time.perf_counter()
    with torch.no_grad():
        target_c = features(content, convs)[CONTENT]
        style_features = features(style, convs)
        target_s = {k: gram(style_features[k]) for k in STYLE}
    targets_s = time.perf_counter() - start

    x = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x],
        lr=1,
        max_iter=args.iterations,
        max_eval=args.iterations * 5 // 4,
        history_size=100,
        tolerance_grad=-1,
        tolerance_change=-1,
        line_search_fn=None,
    )

    def closure():
        opt.zero_grad()
        loss = total_loss(x, features(x, convs), target_c, target_s)
        loss.backward()
        return loss

    start = time.perf_counter()
    opt.step(closure)
    optimise_s = time.perf_counter() - start
    state = opt.state[opt._params[0]]
    with torch.no_grad():
        loss = float(total_loss(x, features(x, convs), target_c, target_s))
    write_safetensors(args.out, "result", x)
    print(
        json.dumps(
            {
                "targets_s": targets_s,
                "optimise_s": optimise_s,
                "loss": loss,
                "iterations": int(state.get("n_iter", 0)),
                "peak_rss_mib": peak_rss_mib(),
            }
        ),
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    commands = parser.add_subparsers(dest="command", required=True)
    step = commands.add_parser("step")
    step.add_argument("sizes", type=int, nargs="+")
    step.add_argument("--repeats", type=int, default=3)
    step.add_argument("--device", default="cpu")
    gatys = commands.add_parser("gatys")
    gatys.add_argument("weights")
    gatys.add_argument("inputs")
    gatys.add_argument("out")
    gatys.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    {"step": run_step, "gatys": run_gatys}[args.command](args)


if __name__ == "__main__":
    main()
