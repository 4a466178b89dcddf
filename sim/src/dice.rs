//! The world's randomness. Draws are keyed (the seed, what is drawn for, a count), not taken in turn from one
//! generator: tasks that ask in another order (two timers due at the same millisecond) still get the same answers.

/// Keyed draws from one seed.
#[derive(Debug, Clone, Copy)]
pub struct Dice {
    seed: u64,
}

impl Dice {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// A number in `0..n` (0 when `n` is 0), the same for the same key and count.
    pub fn below(&self, key: &str, count: u64, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.draw(key, count) % n
    }

    /// A number in `low..=high`.
    pub fn between(&self, key: &str, count: u64, low: u64, high: u64) -> u64 {
        low + self.below(key, count, high.saturating_sub(low) + 1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&self, key: &str, count: u64, percent: u64) -> bool {
        self.below(key, count, 100) < percent
    }

    fn draw(&self, key: &str, count: u64) -> u64 {
        // FNV-1a over the key, then splitmix64 over seed, key and count.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        splitmix(splitmix(self.seed ^ h) ^ count)
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_keyed_not_taken_in_turn() {
        let dice = Dice::new(7);
        let a = dice.below("a", 1, 1000);
        let _ = dice.below("b", 1, 1000);
        assert_eq!(dice.below("a", 1, 1000), a);
        assert_ne!((0..20).map(|i| dice.below("a", i, 1000)).collect::<Vec<_>>(), vec![a; 20]);
        let draws = |key: &str| (0..20).map(|i| dice.below(key, i, 1000)).collect::<Vec<_>>();
        assert_ne!(draws("a"), draws("b"), "another key, other draws");
        assert_ne!(draws("a"), (0..20).map(|i| Dice::new(8).below("a", i, 1000)).collect::<Vec<_>>(), "another seed");
        assert!((0..100).all(|i| (3..=5).contains(&dice.between("x", i, 3, 5))));
        assert_eq!(dice.below("a", 1, 0), 0);
    }
}
