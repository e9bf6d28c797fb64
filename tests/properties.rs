//! The eps-ball property of every attack, over random cases: each adversarial example lies in
//! the threat model's ball around its clean example and inside the data range [lo, hi].
//!
//! A seeded loop draws each case, 300 on the CPU and 10 on wgpu (no shrinking: a failure
//! prints the whole case, which [`Case::describe`] makes reproducible from its number): batch 1..=6, channels 1..=3, image
//! sides 1..=9 (not square, not multiples of anything), 2..=5 classes, data ranges [0, 1],
//! [-1, 1], [-3, 0.5] and [0, 10] with a third of the pixels exactly on an edge, a small
//! random model (mlp, cnn-small where the image is at least 4x4, or a conv + max-pool net),
//! eps in {0, 1e-45, 1e-30, 1e-7, a random share of the range, the whole range} (L2: of the
//! data box's diameter, up to the diameter itself), 1..=4 steps of a size from 1/4 of eps to
//! 100 ranges, 1..=3 restarts, random starts on and off, cross-entropy and the CW margin,
//! untargeted and targeted (next, least-likely, random), and every attack of perturb-adv:
//! FGSM and FGM-L2, R-FGSM, BIM, PGD L-inf and L2, CW-PGD (L-inf and L2), Square and transfer,
//! and AutoAttack's parts: APGD (L-inf and L2; cross-entropy, DLR, targeted DLR) and FAB-T.
//!
//! Tolerances (|x| is the larger of 1, |lo| and |hi|; distances are taken in f64):
//! - L-inf: max_i |x_adv_i - x0_i| <= eps + 1e-6 |x| (the bound x0 +- eps itself rounds to f32);
//! - L2: ||x_adv - x0||_2 <= eps + 1e-6 (eps + |x| sqrt(d)) on the CPU, whose step works in f64
//!   and rounds each coordinate once; 1e-5 instead of 1e-6 on wgpu, whose norms are f32 sums;
//! - the data range exactly: lo <= x_adv_i <= hi (so no NaN), and eps = 0 returns x0 itself.
//!
//! The same property runs on wgpu (fewer cases) when an adapter exists: lavapipe in CI, where
//! PERTURB_REQUIRE_WGPU=1 turns a missing adapter into a failure.

use perturb::adv::autoattack::apgd::{ApgdConfig, ApgdLoss, apgd_batch};
use perturb::adv::autoattack::fab::{FabConfig, fab_targeted_batch};
use perturb::adv::{Attack, AttackConfig, Loss, Method, Norm, TargetRule, run_attack};
use perturb::core::Backend;
use perturb::cpu::CpuBackend;
use perturb::data::{Dataset, SplitMix64};
use perturb::nn::{Layer, Model, build_model};

/// One random case: the data, the model's seed and architecture, and the attacks to run.
struct Case {
    id: u64,
    data: Dataset,
    arch: &'static str,
    lo: f32,
    hi: f32,
    configs: Vec<AttackConfig>,
}

impl Case {
    fn describe(&self, cfg: &AttackConfig) -> String {
        format!(
            "case {} ({} on {} x [{}, {}, {}] in [{}, {}], {} classes): {cfg:?}",
            self.id,
            self.arch,
            self.data.n,
            self.data.channels,
            self.data.height,
            self.data.width,
            self.lo,
            self.hi,
            self.data.num_classes
        )
    }
}

const RANGES: [(f32, f32); 4] = [(0.0, 1.0), (-1.0, 1.0), (-3.0, 0.5), (0.0, 10.0)];

fn unit(rng: &mut SplitMix64) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

fn pick<T: Copy>(rng: &mut SplitMix64, xs: &[T]) -> T {
    xs[rng.below(xs.len())]
}

/// eps for a ball whose largest meaningful radius is `max`: the edge cases and random shares.
fn draw_eps(rng: &mut SplitMix64, max: f32) -> f32 {
    match rng.below(8) {
        0 => 0.0,
        1 => pick(rng, &[1e-45, 1e-30, 1e-7]),
        2 => max,
        _ => max * (0.02 + 0.6 * unit(rng)),
    }
}

/// A step size for radius `eps` in a data range of width `range`: from a quarter of eps to
/// far past the ball (the projection must hold it), never 0.
fn draw_step(rng: &mut SplitMix64, eps: f32, range: f32) -> f32 {
    let s = match rng.below(4) {
        0 => eps / 4.0,
        1 => eps,
        2 => 2.5 * eps,
        _ => 100.0 * range,
    };
    if s > 0.0 { s } else { 0.01 * range }
}

fn draw_case(id: u64) -> Case {
    let mut rng = SplitMix64::for_epoch(0x0e95_ba11, id);
    let (lo, hi) = RANGES[rng.below(RANGES.len())];
    let (c, h, w) = (1 + rng.below(3), 1 + rng.below(9), 1 + rng.below(9));
    let classes = 2 + rng.below(4);
    let n = 1 + rng.below(6);
    let arch = match rng.below(3) {
        0 if h >= 4 && w >= 4 => "cnn-small",
        1 if h >= 2 && w >= 2 => "conv-pool",
        _ => "mlp",
    };
    let d = c * h * w;
    let images = (0..n * d)
        .map(|_| match rng.below(6) {
            0 => lo,
            1 => hi,
            _ => lo + (hi - lo) * unit(&mut rng),
        })
        .collect();
    let data = Dataset {
        name: format!("case-{id}"),
        images,
        labels: (0..n).map(|_| rng.below(classes) as u8).collect(),
        n,
        channels: c,
        height: h,
        width: w,
        num_classes: classes,
    };
    let range = hi - lo;
    let l2_max = range * (d as f32).sqrt();
    let mut configs = Vec::new();
    for method in [Method::Fgsm, Method::RFgsm, Method::Bim, Method::Pgd, Method::Pgd, Method::Square] {
        // PGD twice: once L-inf, once L2 (FGSM alternates; R-FGSM, BIM and Square are L-inf).
        let l2 = match method {
            Method::Pgd => configs.iter().any(|c: &AttackConfig| c.method == Method::Pgd),
            Method::Fgsm => id % 2 == 1,
            _ => false,
        };
        let eps = draw_eps(&mut rng, if l2 { l2_max } else { range });
        let steps = 1 + rng.below(4);
        let step = draw_step(&mut rng, eps, if l2 { l2_max } else { range });
        let mut cfg = match method {
            Method::Fgsm => AttackConfig::fgsm(eps),
            Method::RFgsm => AttackConfig::rfgsm(eps).with_alpha(eps * unit(&mut rng)),
            Method::Bim => AttackConfig::bim(eps, steps, step),
            Method::Pgd => AttackConfig::pgd(eps, steps, step).with_restarts(1 + rng.below(3)),
            Method::Square => AttackConfig::square(eps, 2 + rng.below(20)).with_p_init(0.05 + 0.95 * unit(&mut rng)),
        };
        if l2 {
            cfg = cfg.with_norm(Norm::L2);
        }
        if method == Method::Pgd {
            cfg.random_start = rng.below(3) != 0;
        }
        if method != Method::Square && rng.below(3) == 0 {
            cfg = cfg.with_loss(Loss::CwMargin);
        }
        if rng.below(3) == 0 {
            cfg = cfg.targeted(pick(&mut rng, &[TargetRule::Next, TargetRule::LeastLikely, TargetRule::Random]));
        }
        configs.push(cfg.with_bounds(lo, hi).with_seed(rng.next_u64()));
    }
    Case { id, data, arch, lo, hi, configs }
}

/// The case's target model (and, with `surrogate`, another seed of the same kind for a
/// transfer attack).
fn model<B: Backend>(b: &B, case: &Case, seed: u64) -> Model<B> {
    let input = [case.data.channels, case.data.height, case.data.width];
    let classes = case.data.num_classes;
    let made = match case.arch {
        "conv-pool" => {
            let [c, h, w] = input;
            let flat = 4 * (h / 2) * (w / 2);
            let layers = vec![
                Layer::conv2d(c, 4, 3, 1, 1),
                Layer::Relu,
                Layer::maxpool2d(2, 2),
                Layer::Flatten,
                Layer::linear(flat, 16),
                Layer::Relu,
                Layer::linear(16, classes),
            ];
            Model::new(b, "conv-pool", input, layers, seed)
        }
        arch => build_model(b, arch, input, classes, seed),
    };
    made.unwrap_or_else(|e| panic!("case {}: building {}: {e}", case.id, case.arch))
}

/// Checks every returned example of `adv` against the clean data; `l2_rel` is the L2
/// tolerance's relative part (1e-6 on the CPU, 1e-5 on wgpu).
fn check_ball(case: &Case, cfg: &AttackConfig, adv: &[f32], l2_rel: f64) {
    let what = || case.describe(cfg);
    let data = &case.data;
    let d = data.image_len();
    assert_eq!(adv.len(), data.images.len(), "{}: wrong number of values", what());
    let scale = 1f64.max(case.lo.abs() as f64).max(case.hi.abs() as f64);
    let eps = cfg.eps as f64;
    for (i, (a, x)) in adv.chunks_exact(d).zip(data.images.chunks_exact(d)).enumerate() {
        if let Some((j, v)) = a.iter().enumerate().find(|&(_, v)| !(case.lo..=case.hi).contains(v)) {
            panic!("{}: example {i} value {j} = {v} is outside [{}, {}]", what(), case.lo, case.hi);
        }
        if cfg.eps == 0.0 {
            assert_eq!(a, x, "{}: eps = 0 must return the clean example {i}", what());
            continue;
        }
        match cfg.norm {
            Norm::Linf => {
                let (j, worst) = a
                    .iter()
                    .zip(x)
                    .map(|(&u, &v)| (u as f64 - v as f64).abs())
                    .enumerate()
                    .fold((0, 0.0), |best, (j, e)| if e > best.1 { (j, e) } else { best });
                let tol = 1e-6 * scale;
                assert!(
                    worst <= eps + tol,
                    "{}: example {i} value {j}: |x_adv - x0| = {worst:e} > eps {eps:e} + {tol:e}",
                    what()
                );
            }
            Norm::L2 => {
                let norm = a.iter().zip(x).map(|(&u, &v)| (u as f64 - v as f64).powi(2)).sum::<f64>().sqrt();
                let tol = l2_rel * (eps + scale * (d as f64).sqrt());
                assert!(
                    norm <= eps + tol,
                    "{}: example {i}: ||x_adv - x0|| = {norm:e} > eps {eps:e} + {tol:e}",
                    what()
                );
            }
        }
    }
}

/// Runs every attack of `case` (and a transfer attack from a surrogate with the first
/// gradient attack's settings) on backend `b` and checks the property; returns how many
/// (attack, example) pairs were checked.
fn check_case<B: Backend>(b: &B, case: &Case, batch: usize, l2_rel: f64) -> usize {
    let target = model(b, case, case.id);
    let surrogate = model(b, case, case.id + 1000);
    let mut checked = 0;
    let transfer = case.configs.iter().find(|c| c.uses_gradients()).cloned();
    let mut attacks: Vec<(AttackConfig, Attack<'_, B>)> =
        case.configs.iter().map(|c| (c.clone(), Attack::new(c.clone()))).collect();
    if let Some(t) = transfer {
        attacks.push((t.clone(), Attack::transfer(t, &surrogate)));
    }
    for (cfg, attack) in &attacks {
        let run = run_attack(b, &target, attack, &case.data, batch)
            .unwrap_or_else(|e| panic!("{}: the attack failed: {e}", case.describe(cfg)));
        check_ball(case, cfg, &run.adv, l2_rel);
        checked += run.n;
    }
    checked + check_autoattack_parts(b, &target, case, l2_rel)
}

/// AutoAttack's attacks (APGD with every loss the class count allows, both norms, at the eps of
/// the case's PGD attacks; FAB-T under L-inf) on the whole batch.
fn check_autoattack_parts<B: Backend>(b: &B, target: &Model<B>, case: &Case, l2_rel: f64) -> usize {
    let data = &case.data;
    let labels: Vec<u32> = data.labels.iter().map(|&l| u32::from(l)).collect();
    let k = data.num_classes as u32;
    let targets: Vec<u32> = labels.iter().map(|&y| (y + 1) % k).collect();
    let mut checked = 0;
    for pgd in case.configs.iter().filter(|c| c.method == Method::Pgd) {
        for loss in [ApgdLoss::Xent, ApgdLoss::Dlr, ApgdLoss::DlrTargeted] {
            let cfg = ApgdConfig {
                n_iter: 1 + (case.id as usize % 7),
                seed: case.id,
                lo: case.lo,
                hi: case.hi,
                ..ApgdConfig::new(pgd.norm, pgd.eps, loss)
            };
            if cfg.validate(data.num_classes).is_err() {
                continue;
            }
            let label =
                AttackConfig::pgd(pgd.eps, cfg.n_iter, pgd.eps).with_norm(pgd.norm).with_bounds(case.lo, case.hi);
            let out = apgd_batch(b, target, &cfg, &data.images, &labels, Some(&targets), 0)
                .unwrap_or_else(|e| panic!("{} (APGD {loss:?}): {e}", case.describe(&label)));
            check_ball(case, &label, &out.adv, l2_rel);
            checked += data.n;
        }
        if pgd.norm == Norm::Linf && data.num_classes >= 2 {
            let cfg = FabConfig {
                n_iter: 1 + (case.id as usize % 5),
                lo: case.lo,
                hi: case.hi,
                ..FabConfig::standard(pgd.eps)
            };
            let label = AttackConfig::pgd(pgd.eps, cfg.n_iter, pgd.eps).with_bounds(case.lo, case.hi);
            let out = fab_targeted_batch(b, target, &cfg, &data.images, &labels, &targets, 0)
                .unwrap_or_else(|e| panic!("{} (FAB-T): {e}", case.describe(&label)));
            check_ball(case, &label, &out.adv, l2_rel);
            checked += data.n;
        }
    }
    checked
}

#[test]
fn every_attack_stays_in_the_eps_ball_and_the_data_range_on_the_cpu() {
    let b = CpuBackend::new();
    let mut checked = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for id in 0..300 {
        let case = draw_case(id);
        for c in &case.configs {
            kinds.insert(format!("{}-{:?}-{:?}", c.name(), c.norm, c.loss));
        }
        checked += check_case(&b, &case, 1 + (id as usize % 4), 1e-6);
    }
    // The generator reached every attack kind (so a regression in the draws cannot quietly
    // test less): FGSM both norms, R-FGSM, BIM, PGD both norms and losses, Square, targeted.
    for needle in ["fgsm-", "fgm-l2", "rfgsm", "bim", "pgd-Linf-Xent", "pgd-l2", "cw-Linf", "square", "-targeted"] {
        assert!(kinds.iter().any(|k| k.contains(needle)), "no case ran {needle}: {kinds:?}");
    }
    assert!(checked > 1000, "only {checked} examples checked");
}

/// The edge cases named in the module docs, each once, so they are always covered whatever
/// the random draws do: eps = 0, the smallest subnormal, the whole range under both norms,
/// a 1x1 image, a step 100 ranges long.
#[test]
fn edge_cases_stay_in_the_ball() {
    let b = CpuBackend::new();
    let mut case = draw_case(7);
    let d = case.data.image_len();
    let range = case.hi - case.lo;
    let l2_max = range * (d as f32).sqrt();
    let (lo, hi) = (case.lo, case.hi);
    case.configs = vec![
        AttackConfig::fgsm(0.0),
        AttackConfig::pgd(0.0, 3, 0.5).with_restarts(2),
        AttackConfig::pgd_l2(0.0, 2, 0.5),
        AttackConfig::square(0.0, 5),
        AttackConfig::fgsm(1e-45),
        AttackConfig::pgd(1e-45, 2, 1e-45),
        AttackConfig::pgd(range, 3, 100.0 * range).with_restarts(2),
        AttackConfig::pgd_l2(l2_max, 3, 100.0 * l2_max),
        AttackConfig::fgsm(l2_max).with_norm(Norm::L2),
        AttackConfig::rfgsm(range).with_alpha(range),
        AttackConfig::cw(range, 2, range).targeted(TargetRule::LeastLikely),
        AttackConfig::square(range, 10).with_p_init(1.0),
    ]
    .into_iter()
    .map(|c| c.with_bounds(lo, hi).with_seed(3))
    .collect();
    check_case(&b, &case, 4, 1e-6);
    // A 1x1 single-channel image (an mlp on one value).
    let mut one = draw_case(0);
    one.data = Dataset {
        name: "one-pixel".into(),
        images: vec![one.lo, one.hi, 0.5 * (one.lo + one.hi)],
        labels: vec![0, 1, 1],
        n: 3,
        channels: 1,
        height: 1,
        width: 1,
        num_classes: 2,
    };
    one.arch = "mlp";
    let r = one.hi - one.lo;
    one.configs = [AttackConfig::pgd(r / 3.0, 4, r), AttackConfig::pgd_l2(r, 3, r), AttackConfig::square(r / 2.0, 8)]
        .into_iter()
        .map(|c| c.with_bounds(one.lo, one.hi))
        .collect();
    check_case(&b, &one, 2, 1e-6);
}

/// The tolerance check itself: an example pushed just past the ball, or out of the range, is
/// caught (so the property tests above can fail).
#[test]
fn the_check_catches_a_point_outside_the_ball() {
    let case = draw_case(3);
    let cfg = AttackConfig::pgd(0.1 * (case.hi - case.lo), 1, 0.01).with_bounds(case.lo, case.hi);
    let mut adv = case.data.images.clone();
    let i = adv.iter().position(|&v| v < case.hi - 0.5 * (case.hi - case.lo)).expect("a value below the middle");
    adv[i] += cfg.eps * 1.001;
    let caught = std::panic::catch_unwind(|| check_ball(&case, &cfg, &adv, 1e-6));
    assert!(caught.is_err(), "a point 0.1% outside the L-inf ball passed");
    let mut adv = case.data.images.clone();
    adv[0] = case.hi + 1e-3;
    let caught = std::panic::catch_unwind(|| check_ball(&case, &cfg, &adv, 1e-6));
    assert!(caught.is_err(), "a point outside the data range passed");
}

/// The same property on wgpu, fewer cases (lavapipe is slow); skipped without an adapter
/// unless PERTURB_REQUIRE_WGPU=1.
#[cfg(feature = "wgpu")]
#[test]
fn every_attack_stays_in_the_eps_ball_on_wgpu() {
    let Some(b) = perturb::wgpu::test_backend() else { return };
    let mut checked = 0;
    for id in [0, 1, 2, 4, 5, 7, 9, 11, 13, 16] {
        checked += check_case(&b, &draw_case(id), 3, 1e-5);
    }
    assert!(checked > 50, "only {checked} examples checked");
}
