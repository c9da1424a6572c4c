//! Smoke run of every fuzz target on the stable toolchain: each seed, its truncations, and a few
//! thousand deterministic random and mutated inputs. Real fuzzing is `fuzz/` (see its README).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use tidepool::fuzzing::XorShift;
use tidepool::fuzzing::{Target, TARGETS};

/// Random inputs and mutated seeds per target, each.
const ROUNDS: usize = 2_000;

/// Bytes that often sit on a parser's edge: NUL, quotes and separators, sign and high bits.
const INTERESTING: &[u8] = b"\0\xff\x7f\x80\x01\x03\x04\x05\x08=,\n\"'[]$:-\\ ";
/// Length words that often sit on a decoder's edge.
const INTERESTING_U32: &[u32] = &[
    0,
    3,
    4,
    5,
    8,
    16,
    10_000,
    10_001,
    80_877_103,
    0x7fff_ffff,
    u32::MAX,
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The seed files of a target, in name order.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("seeds").join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("read seed dir").path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("read seed"))
        .collect()
}

/// One to four random edits of `seed`: bit flips, interesting bytes or length words, inserts,
/// deletions, truncation, duplicated chunks, or a splice with another seed.
fn mutate(rng: &mut XorShift, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(8) {
            0 if at < data.len() => data[at] ^= 1 << rng.below(8),
            1 if at < data.len() => data[at] = rng.pick(INTERESTING),
            2 => data.insert(at, rng.pick(INTERESTING)),
            3 if at < data.len() => {
                data.remove(at);
            }
            4 => data.truncate(at),
            5 if at + 4 <= data.len() => {
                data[at..at + 4].copy_from_slice(&rng.pick(INTERESTING_U32).to_be_bytes())
            }
            6 => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                let chunk = data[at..end].to_vec();
                data.splice(at..at, chunk);
            }
            _ => {
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
        }
    }
    data
}

/// Random bytes; half the time drawn from bytes the seeds use, so text formats stay textual.
fn random_input(rng: &mut XorShift, alphabet: &[u8]) -> Vec<u8> {
    let len = rng.below(128);
    let textual = rng.next_u64() & 1 == 0 && !alphabet.is_empty();
    (0..len)
        .map(|_| {
            if textual {
                rng.pick(alphabet)
            } else {
                rng.next_u64() as u8
            }
        })
        .collect()
}

/// Runs one input, turning a panic into a message that carries the input to save as a seed.
fn run(name: &str, target: Target, input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
        panic!(
            "fuzz target {name} failed on input b\"{}\"; save it under fuzz/seeds/{name}/",
            input.escape_ascii()
        );
    }
}

#[test]
fn every_target_survives_seeds_random_and_mutated_inputs() {
    for &(name, target) in TARGETS {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "fuzz/seeds/{name} has no seeds");
        for seed in &seeds {
            for cut in 0..=seed.len() {
                run(name, target, &seed[..cut]);
            }
        }
        let mut alphabet: Vec<u8> = seeds.concat();
        alphabet.sort_unstable();
        alphabet.dedup();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        for _ in 0..ROUNDS {
            run(name, target, &random_input(&mut rng, &alphabet));
            let seed = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            run(name, target, &mutate(&mut rng, seed, other));
        }
    }
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for &(name, _) in TARGETS {
        let file = format!("fuzz_targets/{name}.rs");
        assert!(fuzz_dir().join(&file).is_file(), "fuzz/{file} is missing");
        assert!(
            manifest.contains(&format!("path = \"{file}\"")),
            "no [[bin]] for {name}"
        );
    }
}
