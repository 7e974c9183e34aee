//! The fast CPU path: ONNX Runtime's OpenVINO execution provider computing in bfloat16 (AMX or
//! AVX-512 BF16 where the CPU has them, fp32 elsewhere) still agrees with the ncnn engine within
//! 40 dB on every model. A test binary of its own: a process loads one ONNX Runtime library.

use lambent::upscale::{MODELS, Options, Provider, Upscaler};

#[path = "../common/reference.rs"]
mod reference;

use reference::{ncnn, psnr, root, scene};

#[test]
fn every_model_in_bf16_stays_within_40_db_of_the_ncnn_engine() {
    let root = root();
    let library = lambent_local::models::openvino_library(&root).expect("onnxruntime-openvino");
    let dir = lambent_local::models::models_dir(&root).expect("models");
    let names: Vec<&str> = MODELS.iter().map(|(n, _)| *n).collect();
    let upscaler = Upscaler::load(
        Some(&library),
        &dir,
        &names,
        Provider::OpenVino { bf16: true },
    )
    .expect("models load on OpenVINO");
    let input = root.join("tests/fixtures/images/scene.png");
    for (model, _) in MODELS {
        let reference = ncnn(model, &input);
        // The whole image in one tile: what is measured is precision, not tiling.
        let options = Options {
            tile: 0,
            ..Options::default()
        };
        let out = upscaler
            .upscale(model, scene(), &options, &mut |_, _| true)
            .expect("upscale")
            .expect("not canceled");
        let db = psnr(&out, &reference);
        eprintln!("{model}: OpenVINO bf16: {db:.1} dB against ncnn");
        assert!(db >= 40.0, "{model}: {db:.1} dB");
    }
}
