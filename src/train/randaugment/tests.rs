//! RandAugment's policy parsing, each operation's defining property, and the batch pass.

use super::*;

fn image(c: usize, h: usize, w: usize, f: impl Fn(usize) -> u8) -> Image {
    Image {
        c,
        h,
        w,
        data: (0..c * h * w).map(f).collect(),
    }
}

#[test]
fn policies_parse_like_timm_and_bad_ones_say_why() {
    assert_eq!(RandAugment::parse("").unwrap(), None);
    assert_eq!(RandAugment::parse("  ").unwrap(), None);
    let deit = RandAugment::parse("rand-m9-mstd0.5-inc1").unwrap().unwrap();
    assert_eq!(
        deit,
        RandAugment {
            layers: 2,
            magnitude: 9.0,
            magnitude_std: 0.5,
            magnitude_max: 10.0,
            increasing: true,
            prob: 0.5,
        }
    );
    let other = RandAugment::parse("rand-n3-m7-mmax12-p0.8-inc0")
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            other.layers,
            other.magnitude,
            other.magnitude_max,
            other.prob,
            other.increasing
        ),
        (3, 7.0, 12.0, 0.8, false)
    );
    for (bad, says) in [
        ("original-mstd0.5", "AutoAugment"),
        ("augmix-m5", "AutoAugment"),
        ("rand-m9-w0", "weighted"),
        ("rand-x3", "unknown section 'x3'"),
        ("rand-n2.5", "'n2.5'"),
        ("rand-p1.5", "'p1.5'"),
        ("rand-m", "'m'"),
    ] {
        let e = RandAugment::parse(bad).unwrap_err();
        assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn whole_pixel_translations_and_quarter_turns_move_pixels_exactly() {
    let src = image(1, 4, 5, |k| (k * 11) as u8);
    let mut moved = src.clone();
    moved.affine([1.0, 0.0, 2.0, 0.0, 1.0, 0.0]);
    for y in 0..4 {
        for x in 0..5 {
            let want = if x + 2 < 5 {
                src.data[y * 5 + x + 2]
            } else {
                FILL
            };
            assert_eq!(moved.data[y * 5 + x], want, "({y}, {x})");
        }
    }
    let square = image(2, 4, 4, |k| (k * 7 + 3) as u8);
    let mut turned = square.clone();
    turned.rotate(90.0);
    for ch in 0..2 {
        for y in 0..4 {
            for x in 0..4 {
                // Counter-clockwise: the top-right corner comes to the top-left.
                let want = square.data[ch * 16 + x * 4 + (3 - y)];
                assert_eq!(turned.data[ch * 16 + y * 4 + x], want);
            }
        }
    }
    let mut same = square.clone();
    same.rotate(0.0);
    same.affine([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    assert_eq!(same, square);
}

#[test]
fn the_cubic_passes_through_its_taps_and_samples_inside_the_image_only() {
    assert_eq!(cubic([5.0, 7.0, 11.0, 2.0], 0.0), 7.0);
    assert_eq!(cubic([5.0, 7.0, 11.0, 2.0], 1.0), 11.0);
    // Half way between two flat regions of 0 and 200: the mean.
    let plane = [0u8, 0, 200, 200];
    assert_eq!(bicubic(&plane, (1, 4), 2.0, 0.5), Some(100));
    assert_eq!(bicubic(&plane, (1, 4), -0.1, 0.5), None);
    assert_eq!(bicubic(&plane, (1, 4), 4.0, 0.5), None);
}

#[test]
fn look_up_operations_do_what_pil_does() {
    let ramp = image(1, 1, 6, |k| [50u8, 60, 70, 80, 90, 100][k]);
    let mut stretched = ramp.clone();
    stretched.per_channel(auto_contrast_lut);
    // PIL's float arithmetic truncates 90 and 100 to 203 and 254.
    assert_eq!(stretched.data, vec![0, 51, 102, 153, 203, 254]);
    let mut flat = image(1, 2, 2, |_| 77);
    flat.per_channel(auto_contrast_lut);
    flat.per_channel(equalize_lut);
    assert_eq!(flat.data, vec![77; 4]);
    // Two levels, half the pixels each: equalize sends them to the two ends.
    let mut two = image(1, 1, 510, |k| if k < 255 { 10 } else { 20 });
    two.per_channel(equalize_lut);
    assert_eq!((two.data[0], two.data[509]), (0, 255));
    let mut inv = ramp.clone();
    inv.map(|p| 255 - p);
    assert_eq!(inv.data[0], 205);
    inv.map(|p| 255 - p);
    assert_eq!(inv, ramp);
    let mut post = image(1, 1, 3, |k| [0b1011_0111u8, 255, 15][k]);
    post.posterize(2);
    assert_eq!(post.data, vec![0b1000_0000, 0b1100_0000, 0]);
    post.posterize(8);
    assert_eq!(post.data, vec![0b1000_0000, 0b1100_0000, 0]);
}

#[test]
fn enhancements_blend_towards_their_degenerate_image() {
    let img = image(3, 3, 3, |k| (k * 9) as u8);
    let mut same = img.clone();
    same.blend_with(|_, _| 0, 1.0);
    assert_eq!(same, img);
    let mut dark = img.clone();
    dark.blend_with(|_, _| 0, 0.5);
    assert!(dark.data.iter().zip(&img.data).all(|(d, p)| *d == p / 2));
    let mut bright = img.clone();
    bright.blend_with(|_, _| 0, 1.9);
    assert!(
        bright
            .data
            .iter()
            .zip(&img.data)
            .all(|(b, p)| *b == (1.9f32 * f32::from(*p)).min(255.0) as u8)
    );

    // PIL's luma of pure red, green and blue.
    let rgb = Image {
        c: 3,
        h: 1,
        w: 3,
        data: vec![255, 0, 0, 0, 255, 0, 0, 0, 255],
    };
    assert_eq!(rgb.luma(), vec![76, 150, 29]);
    // SMOOTH keeps the border and averages the centre with weight 5/13.
    let spot = image(1, 3, 3, |k| if k == 4 { 130 } else { 0 });
    assert_eq!(spot.smoothed(), vec![0, 0, 0, 0, 50, 0, 0, 0, 0]);
}

#[test]
fn the_batch_pass_is_seeded_bounded_and_a_no_op_at_probability_zero() {
    let (n, c, h, w) = (4, 1, 8, 8);
    let bytes: Vec<u8> = (0..n * c * h * w).map(|k| ((k * 37) % 256) as u8).collect();
    let batch: Vec<f32> = bytes
        .iter()
        .map(|&b| (f32::from(b) / 255.0 - 0.5) / 0.5)
        .collect();
    let deit = RandAugment::parse("rand-m9-mstd0.5-inc1").unwrap().unwrap();
    let run = |ra: &RandAugment, seed: u64| {
        let mut x = batch.clone();
        ra.apply(&mut x, (n, c, h, w), &mut Rng::new(seed));
        x
    };
    let a = run(&deit, 1);
    assert_eq!(a, run(&deit, 1));
    assert_ne!(a, run(&deit, 2));
    assert_ne!(a, batch);
    assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
    let off = RandAugment { prob: 0.0, ..deit };
    assert_eq!(run(&off, 1), batch);
    let back: Vec<u8> = batch.iter().map(|&v| to_byte(v)).collect();
    assert_eq!(back, bytes);
}
