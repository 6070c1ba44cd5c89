//! The log2 histograms the kernel side fills: bucket `b` counts values in
//! [2^b, 2^(b+1)) microseconds (bucket 0 also holds values below 1 µs), the
//! last bucket is open-ended. A leaf: no other module of the crate.

/// Buckets per histogram (`IOMON_HIST_BUCKETS` in `bpf/iomon.h`).
pub const BUCKETS: usize = 32;

/// Upper bound, in microseconds, of bucket `b`; `None` for the open last
/// bucket.
pub fn bucket_upper_us(b: usize) -> Option<u64> {
    (b + 1 < BUCKETS).then(|| 1u64 << (b + 1))
}

/// The `q` quantile (0..=1) of a histogram, in microseconds: the upper
/// bound of the bucket it falls in (the lower bound for the open last
/// bucket); `None` for an empty histogram.
pub fn quantile_us(hist: &[u64], q: f64) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (b, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_upper_us(b).unwrap_or(1u64 << b));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds() {
        let mut h = vec![0u64; BUCKETS];
        h[0] = 50; // < 2 us
        h[3] = 49; // 8..16 us
        h[10] = 1; // 1024..2048 us
        assert_eq!(quantile_us(&h, 0.5), Some(2));
        assert_eq!(quantile_us(&h, 0.9), Some(16));
        assert_eq!(quantile_us(&h, 1.0), Some(2048));
        assert_eq!(quantile_us(&[0; 4], 0.5), None);
        assert_eq!(bucket_upper_us(BUCKETS - 1), None);
    }
}
