//! The fast CPU path: ONNX Runtime's OpenVINO execution provider computing in bfloat16 (AMX or
//! AVX-512 BF16 where the CPU has them, fp32 elsewhere) still agrees with the ncnn engine within
//! 40 dB on every model. A test binary of its own: a process loads one ONNX Runtime library.

use lambent::upscale::{MODELS, Options, Provider, Upscaler, amx_available};

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
        Provider::OpenVino {
            bf16: true,
            amx: false,
        },
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

/// Lambent's own AMX engine: where the CPU has AMX it computes every shipped model (the RRDB
/// models x4plus and x4plus-anime; the compact animevideov3, whose x2 and x3 are its x4 and a
/// bicubic resize) within 45 dB of ONNX
/// Runtime's exact fp32 (#17's bar), on the whole image and in tiles (several input sizes in one
/// run, each tile with its context); elsewhere the models stay on ONNX Runtime.
#[test]
fn the_models_on_the_amx_engine_stay_within_45_db_of_exact_fp32() {
    let root = root();
    let library = lambent_local::models::openvino_library(&root).expect("onnxruntime-openvino");
    let dir = lambent_local::models::models_dir(&root).expect("models");
    let names: Vec<&str> = MODELS.iter().map(|(n, _)| *n).collect();
    let amx = Upscaler::open(
        Some(&library),
        &dir,
        &names,
        Provider::OpenVino {
            bf16: true,
            amx: true,
        },
    )
    .expect("models open");
    let exact = Upscaler::open(Some(&library), &dir, &names, Provider::Cpu).expect("models open");
    for model in names {
        let engine = amx.engine(model).expect("the model builds");
        if !amx_available() {
            assert_eq!(
                engine, "onnxruntime",
                "{model}: no AMX here, so ONNX Runtime"
            );
            continue;
        }
        assert_eq!(engine, "amx", "{model}");
        // The whole 64x48 image (84 px wide with its edges: a part block of columns), then
        // tiles of 24 px, whose inputs come in four sizes.
        for tile in [0, 24] {
            let options = Options {
                tile,
                ..Options::default()
            };
            let run = |upscaler: &Upscaler| {
                upscaler
                    .upscale(model, scene(), &options, &mut |_, _| true)
                    .expect("upscale")
                    .expect("not canceled")
            };
            let db = psnr(&run(&amx), &run(&exact));
            eprintln!("{model}: tile {tile}: AMX engine {db:.1} dB from exact fp32");
            assert!(db >= 45.0, "{model}, tile {tile}: {db:.1} dB");
        }
    }
}
