//! Sizes, rates and durations as people read them.

/// Bytes in decimal units, as the Hub and disk makers count them: `723 MB`, `2.14 GB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = next;
    }
    // Three significant digits: enough to see a download move, not so many that they flicker.
    if value < 10.0 {
        format!("{value:.2} {unit}")
    } else if value < 100.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.0} {unit}")
    }
}

/// A rate in megabytes per second.
pub fn rate(bytes_per_second: f64) -> String {
    format!("{:.1} MB/s", bytes_per_second / 1e6)
}

/// A duration rounded to what matters: `45 s`, `3 min 05 s`, `1 h 20 min`.
pub fn duration(seconds: f64) -> String {
    let seconds = if seconds.is_finite() { seconds.max(0.0).round() as u64 } else { 0 };
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min {:02} s", seconds / 60, seconds % 60),
        _ => format!("{} h {:02} min", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_rates_and_durations_read_naturally() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(12_345), "12.3 kB");
        assert_eq!(bytes(723_000_000), "723 MB");
        assert_eq!(bytes(2_140_000_000), "2.14 GB");
        assert_eq!(bytes(5_000_000_000_000_000), "5000 TB");
        assert_eq!(rate(45_260_000.0), "45.3 MB/s");
        assert_eq!(duration(44.6), "45 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(4800.0), "1 h 20 min");
        assert_eq!(duration(f64::INFINITY), "0 s");
    }
}
