//! Best-cut scores agree with OpenCV to 1e-6 relative on fixture images (made once by
//! infra/fixtures/make_bestcut_fixtures.py with opencv-python-headless).

use lambent::bestcut::{best_cut, gray, sharpness};
use lambent_local::repo_root;
use serde_json::Value;

#[test]
fn sharpness_matches_opencv_and_the_sharpest_wins() {
    let dir = repo_root().join("tests/fixtures/bestcut");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected.json")).expect("expected.json"),
    )
    .expect("json");
    let scores = expected["sharpness"].as_object().expect("scores");
    assert!(scores.len() >= 5);
    for (name, want) in scores {
        let image = image::open(dir.join(name)).expect("fixture");
        let want = want.as_f64().expect("number");
        let got = sharpness(&image);
        let relative = if want == 0.0 {
            got.abs()
        } else {
            ((got - want) / want).abs()
        };
        assert!(relative <= 1e-6, "{name}: {got} vs OpenCV {want}");
    }

    let names = ["noise-very-blurred.png", "noise.png", "noise-blurred.png"];
    let images: Vec<_> = names
        .iter()
        .map(|n| image::open(dir.join(n)).expect("fixture"))
        .collect();
    let (best, ranked) = best_cut(&images).expect("some");
    assert_eq!(names[best], "noise.png");
    assert!(ranked[0] < ranked[2] && ranked[2] < ranked[1]);
}

#[test]
fn the_gray_conversion_is_opencvs_pixel_for_pixel() {
    let dir = repo_root().join("tests/fixtures/bestcut");
    let (ours, width, height) = gray(&image::open(dir.join("noise.png")).expect("fixture"));
    let theirs = image::open(dir.join("noise.gray.png"))
        .expect("OpenCV's gray")
        .to_luma8();
    assert_eq!((width as u32, height as u32), theirs.dimensions());
    assert_eq!(ours, theirs.into_raw());
}
