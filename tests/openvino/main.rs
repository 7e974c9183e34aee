//! The fast CPU path: ONNX Runtime's OpenVINO execution provider computing in bfloat16 (AMX or
//! AVX-512 BF16 where the CPU has them, fp32 elsewhere) still agrees with the ncnn engine within
//! 40 dB on every model. A test binary of its own: a process loads one ONNX Runtime library.

use lambent::upscale::{MODELS, Options, Provider, Upscaler, own_engine};

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

/// Lambent's own engine: on the units this CPU suits (AMX; fp32 on FMA where the CPU computes no
/// bf16) it computes every shipped model (the RRDB models x4plus and x4plus-anime; the compact
/// animevideov3, whose x2 and x3 are its x4 and a bicubic resize) within 45 dB of ONNX Runtime's
/// exact fp32 (#17's bar), on the whole image and in tiles (several input sizes in one run, each
/// tile with its context); where it suits none, the models stay on ONNX Runtime.
#[test]
fn the_models_on_lambents_engine_stay_within_45_db_of_exact_fp32() {
    let units = own_engine();
    let Some(units) = units else {
        let upscaler = upscaler(None);
        for (model, _) in MODELS {
            let engine = upscaler.engine(model).expect("the model builds");
            assert_eq!(
                engine, "onnxruntime",
                "{model}: no units here, so ONNX Runtime"
            );
        }
        return;
    };
    within_45_db_of_exact_fp32(units);
}

/// The engine in fp32 on FMA (the worker's on CPUs without bf16, such as AMD's Zen 3) on any CPU
/// with AVX2 and FMA, whichever units the CPU would choose: the same bar.
#[test]
fn the_models_on_lambents_engine_on_fma_stay_within_45_db_of_exact_fp32() {
    if upscaler(None).on_units("fma").is_err() {
        eprintln!("no AVX2 and FMA here: nothing to test");
        return;
    }
    within_45_db_of_exact_fp32("fma");
}

/// The worker's mode (OpenVINO, bf16, Lambent's engine), its engine on `units` if given.
fn upscaler(units: Option<&str>) -> Upscaler {
    let root = root();
    let library = lambent_local::models::openvino_library(&root).expect("onnxruntime-openvino");
    let dir = lambent_local::models::models_dir(&root).expect("models");
    let names: Vec<&str> = MODELS.iter().map(|(n, _)| *n).collect();
    let upscaler = Upscaler::open(
        Some(&library),
        &dir,
        &names,
        Provider::OpenVino {
            bf16: true,
            amx: true,
        },
    )
    .expect("models open");
    match units {
        Some(units) => upscaler.on_units(units).expect("units this CPU has"),
        None => upscaler,
    }
}

fn within_45_db_of_exact_fp32(units: &str) {
    let root = root();
    let library = lambent_local::models::openvino_library(&root).expect("onnxruntime-openvino");
    let dir = lambent_local::models::models_dir(&root).expect("models");
    let names: Vec<&str> = MODELS.iter().map(|(n, _)| *n).collect();
    let engine = upscaler(Some(units));
    let exact = Upscaler::open(Some(&library), &dir, &names, Provider::Cpu).expect("models open");
    for model in names {
        assert_eq!(
            engine.engine(model).expect("the model builds"),
            units,
            "{model}"
        );
        // The worker's tile on this engine: the larger one on FMA, whose maps after the trunk
        // are rings of rows.
        let tile = if units == "fma" { 512 } else { 256 };
        assert_eq!(engine.default_tile(model), tile, "{model} on {units}");
        // The whole 64x48 image (84 px wide with its edges: a part block of columns), then
        // tiles of 24 px, whose inputs come in four sizes, then of 23 px (odd sizes: a last row
        // and column that FMA computes without Winograd's pairs), then the whole image again,
        // in the buffers the tiles' runs left: the same bits as the first time.
        let mut first = None;
        for tile in [0, 24, 23, 0] {
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
            let out = run(&engine);
            if tile == 0 {
                match &first {
                    None => first = Some(out.clone()),
                    Some(first) => assert!(
                        first.as_bytes() == out.as_bytes(),
                        "{model} on {units}: a second run differs from the first"
                    ),
                }
            }
            let db = psnr(&out, &run(&exact));
            eprintln!(
                "{model}: tile {tile}: Lambent's engine on {units}: {db:.1} dB from exact fp32"
            );
            assert!(db >= 45.0, "{model}, tile {tile}, {units}: {db:.1} dB");
        }
    }
}
