//! The linear assignment problem on a dense square score matrix: pick one column per row, each
//! column once, with the largest total score.
//!
//! [`best_assignment`] solves it exactly with the Hungarian algorithm (shortest augmenting
//! paths with potentials, `O(n³)`) up to [`EXACT_LIMIT`] rows, and with Bertsekas' auction
//! algorithm with ε-scaling above, whose total score is within `n·ε` of the optimum.

/// The largest `n` solved exactly; larger problems use the auction algorithm.
pub const EXACT_LIMIT: usize = 2048;

/// The final ε of the auction: its total score is within `n · AUCTION_EPS` of the optimum.
pub const AUCTION_EPS: f64 = 1e-4;

/// The column of each row that maximises the total of `score` (row-major, `n × n`).
///
/// Returns `perm` with `perm[row] = column`. Non-finite scores count as the lowest score.
pub fn best_assignment(score: &[f32], n: usize) -> Vec<usize> {
    if n <= EXACT_LIMIT {
        hungarian(score, n)
    } else {
        auction(score, n, AUCTION_EPS)
    }
}

fn finite(x: f32, floor: f64) -> f64 {
    if x.is_finite() { f64::from(x) } else { floor }
}

/// The lowest finite score, and the spread of the finite scores.
fn range(score: &[f32]) -> (f64, f64) {
    let (lo, hi) = score
        .iter()
        .filter(|x| x.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| {
            (lo.min(f64::from(x)), hi.max(f64::from(x)))
        });
    if lo > hi { (0.0, 0.0) } else { (lo, hi - lo) }
}

/// Exact maximum-score assignment: the Hungarian algorithm on the costs `-score`, adding one
/// row at a time along a shortest augmenting path (Dijkstra with potentials).
pub fn hungarian(score: &[f32], n: usize) -> Vec<usize> {
    if n == 0 || score.len() != n * n {
        return (0..n).collect();
    }
    let (lo, spread) = range(score);
    let floor = lo - spread - 1.0;
    let cost = |i: usize, j: usize| -finite(score[i * n + j], floor);
    // Index 0 of columns is a virtual column; rows and columns are 1-based below.
    let mut row_pot = vec![0.0f64; n + 1];
    let mut col_pot = vec![0.0f64; n + 1];
    let mut owner = vec![0usize; n + 1];
    let mut way = vec![0usize; n + 1];
    let mut min_slack = vec![0.0f64; n + 1];
    let mut used = vec![false; n + 1];
    for row in 1..=n {
        owner[0] = row;
        let mut col = 0usize;
        min_slack.fill(f64::INFINITY);
        used.fill(false);
        loop {
            used[col] = true;
            let i = owner[col];
            let mut delta = f64::INFINITY;
            let mut next = 0usize;
            let base = row_pot[i];
            for j in 1..=n {
                if used[j] {
                    continue;
                }
                let slack = cost(i - 1, j - 1) - base - col_pot[j];
                if slack < min_slack[j] {
                    min_slack[j] = slack;
                    way[j] = col;
                }
                if min_slack[j] < delta {
                    delta = min_slack[j];
                    next = j;
                }
            }
            for j in 0..=n {
                if used[j] {
                    row_pot[owner[j]] += delta;
                    col_pot[j] -= delta;
                } else {
                    min_slack[j] -= delta;
                }
            }
            col = next;
            if owner[col] == 0 {
                break;
            }
        }
        while col != 0 {
            let prev = way[col];
            owner[col] = owner[prev];
            col = prev;
        }
    }
    let mut perm = vec![0usize; n];
    for j in 1..=n {
        perm[owner[j] - 1] = j - 1;
    }
    perm
}

/// Approximate maximum-score assignment by Bertsekas' auction with ε-scaling (Gauss–Seidel
/// bidding): rows bid for their best column at current prices; ε shrinks by 8 per round down
/// to `eps_final`. The result is within `n · eps_final` of the optimum.
pub fn auction(score: &[f32], n: usize, eps_final: f64) -> Vec<usize> {
    if n == 0 || score.len() != n * n {
        return (0..n).collect();
    }
    let (lo, spread) = range(score);
    let floor = lo - spread - 1.0;
    let value = |i: usize, j: usize| finite(score[i * n + j], floor);
    let eps_final = eps_final.max(1e-12);
    let mut eps = (spread / 4.0).max(eps_final);
    let mut price = vec![0.0f64; n];
    let mut owner: Vec<Option<usize>> = vec![None; n];
    let mut choice: Vec<Option<usize>> = vec![None; n];
    loop {
        owner.fill(None);
        choice.fill(None);
        let mut queue: Vec<usize> = (0..n).rev().collect();
        while let Some(i) = queue.pop() {
            let (mut best, mut best_v, mut second_v) =
                (0usize, f64::NEG_INFINITY, f64::NEG_INFINITY);
            for (j, p) in price.iter().enumerate() {
                let v = value(i, j) - p;
                if v > best_v {
                    second_v = best_v;
                    best_v = v;
                    best = j;
                } else if v > second_v {
                    second_v = v;
                }
            }
            let raise = if second_v.is_finite() {
                best_v - second_v
            } else {
                0.0
            };
            price[best] += raise + eps;
            if let Some(previous) = owner[best].replace(i) {
                choice[previous] = None;
                queue.push(previous);
            }
            choice[i] = Some(best);
        }
        if eps <= eps_final {
            break;
        }
        eps = (eps / 8.0).max(eps_final);
    }
    choice
        .iter()
        .enumerate()
        .map(|(i, c)| c.unwrap_or(i))
        .collect()
}

/// Whether `p` holds each of `0..p.len()` exactly once.
pub fn is_permutation(p: &[usize]) -> bool {
    let mut seen = vec![false; p.len()];
    p.iter()
        .all(|&j| j < p.len() && !std::mem::replace(&mut seen[j], true))
}

/// The total score of an assignment.
pub fn total(score: &[f32], n: usize, perm: &[usize]) -> f64 {
    perm.iter()
        .enumerate()
        .map(|(i, &j)| f64::from(score[i * n + j]))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_scores(seed: u64, n: usize) -> Vec<f32> {
        let mut rng = crate::nn::init::Rng::new(seed);
        (0..n * n).map(|_| rng.normal() as f32).collect()
    }

    /// Every permutation of `0..n`, for brute force.
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut out = Vec::new();
        for p in permutations(n - 1) {
            for at in 0..=p.len() {
                let mut q = p.clone();
                q.insert(at, n - 1);
                out.push(q);
            }
        }
        out
    }

    #[test]
    fn hungarian_matches_brute_force() {
        for seed in 0..20 {
            let n = 1 + (seed as usize % 6);
            let s = random_scores(seed, n);
            let best = permutations(n)
                .iter()
                .map(|p| total(&s, n, p))
                .fold(f64::MIN, f64::max);
            let p = hungarian(&s, n);
            assert!(is_permutation(&p), "{p:?}");
            assert!((total(&s, n, &p) - best).abs() < 1e-9, "seed {seed}");
        }
    }

    #[test]
    fn hungarian_recovers_a_hidden_permutation() {
        let n = 64;
        let hidden: Vec<usize> = (0..n).map(|i| (i * 37 + 5) % n).collect();
        let mut s = random_scores(9, n);
        for (i, &j) in hidden.iter().enumerate() {
            s[i * n + j] += 10.0;
        }
        assert_eq!(hungarian(&s, n), hidden);
        assert_eq!(auction(&s, n, 1e-4), hidden);
    }

    #[test]
    fn auction_is_within_n_eps_of_the_optimum() {
        for (seed, n) in [(1u64, 40usize), (2, 120), (3, 7)] {
            let s = random_scores(seed, n);
            let exact = total(&s, n, &hungarian(&s, n));
            let p = auction(&s, n, 1e-4);
            assert!(is_permutation(&p));
            let got = total(&s, n, &p);
            assert!(
                got <= exact + 1e-9 && exact - got <= n as f64 * 1e-4 + 1e-9,
                "n {n}: auction {got}, exact {exact}"
            );
        }
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(hungarian(&[], 0), Vec::<usize>::new());
        assert_eq!(hungarian(&[f32::NAN; 4], 2).len(), 2);
        assert!(is_permutation(&auction(&[1.0; 9], 3, 1e-3)));
        assert!(is_permutation(&hungarian(&[1.0; 9], 3)));
    }
}
