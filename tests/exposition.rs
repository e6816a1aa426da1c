//! The exact text of both formats for one of every instrument: the order,
//! the metadata lines, the suffixes and the number formats. promshard's
//! own counters are families among the others: its collector panics at
//! zero, and the families of refused values and dropped observations
//! with their metadata but no series while none counts anything.

use promshard::{Counter, Enum, Format, Gauge, Histogram, Info, LabelValue, metric};

#[derive(Clone, Copy, LabelValue)]
enum Disk {
    Ssd,
    Hdd,
}

/// Bytes written.
#[metric(unit = "bytes", labels(disk: Disk))]
static DISK_WRITES_BYTES_TOTAL: Counter;

/// Temperature.
#[metric(help = "Temperature.\nSecond \"line\" \\.", unit = "celsius")]
static TEMPERATURE_CELSIUS: Gauge;

/// Flush time.
#[metric(unit = "seconds", buckets = [0.5, 1.0])]
static FLUSH_SECONDS: Histogram;

/// Version.
#[metric]
static VERSION: Info;

/// Preferred disk.
#[metric]
static PREFERRED_DISK: Enum<Disk>;

fn record() {
    DISK_WRITES_BYTES_TOTAL.with((Disk::Ssd,)).inc_by(4096);
    DISK_WRITES_BYTES_TOTAL.with((Disk::Hdd,)).inc_by_f64(0.5).unwrap();
    TEMPERATURE_CELSIUS.set(-3.25);
    FLUSH_SECONDS.observe(0.25);
    FLUSH_SECONDS.observe(f64::INFINITY);
    VERSION.set(&[("release", "1.0")]);
    PREFERRED_DISK.set(Disk::Hdd);
}

/// Everything before the process collector's families.
fn declared_part(format: Format) -> String {
    let text = String::from_utf8(promshard::encode(format)).unwrap();
    let end = text.find("# HELP process_").expect("process metrics follow declared ones");
    let tail = if format == Format::OpenMetrics { "# EOF\n" } else { "" };
    assert!(text.ends_with(tail));
    text[..end].to_owned()
}

#[test]
fn both_formats_byte_for_byte() {
    record();
    let prometheus = r#"# HELP disk_writes_bytes_total Bytes written.
# TYPE disk_writes_bytes_total counter
disk_writes_bytes_total{disk="ssd"} 4096
disk_writes_bytes_total{disk="hdd"} 0.5
# HELP flush_seconds Flush time.
# TYPE flush_seconds histogram
flush_seconds_bucket{le="0.5"} 1
flush_seconds_bucket{le="1.0"} 1
flush_seconds_bucket{le="+Inf"} 2
flush_seconds_count 2
flush_seconds_sum +Inf
# HELP preferred_disk Preferred disk.
# TYPE preferred_disk gauge
preferred_disk{preferred_disk="ssd"} 0
preferred_disk{preferred_disk="hdd"} 1
# HELP promshard_collector_errors_total Scrapes in which a collector could not read its source.
# TYPE promshard_collector_errors_total counter
promshard_collector_errors_total{collector="redis"} 0
# HELP promshard_collector_panics_total Collector panics caught during scrapes; each cost its collector's families in that scrape.
# TYPE promshard_collector_panics_total counter
promshard_collector_panics_total 0
# HELP promshard_label_refused_total Recordings dropped because a label value was not in the metric's list (or info pairs too large).
# TYPE promshard_label_refused_total counter
# HELP promshard_observations_dropped_total Histogram observations dropped because they were NaN.
# TYPE promshard_observations_dropped_total counter
# HELP promshard_set_function_panics_total Panics of gauge functions (Gauge::set_function); each left its series at its last value.
# TYPE promshard_set_function_panics_total counter
promshard_set_function_panics_total 0
# HELP temperature_celsius Temperature.\nSecond "line" \\.
# TYPE temperature_celsius gauge
temperature_celsius -3.25
# HELP version_info Version.
# TYPE version_info gauge
version_info{release="1.0"} 1
"#;
    assert_eq!(declared_part(Format::Prometheus), prometheus);

    let openmetrics = r#"# HELP disk_writes_bytes Bytes written.
# TYPE disk_writes_bytes counter
# UNIT disk_writes_bytes bytes
disk_writes_bytes_total{disk="ssd"} 4096
disk_writes_bytes_total{disk="hdd"} 0.5
# HELP flush_seconds Flush time.
# TYPE flush_seconds histogram
# UNIT flush_seconds seconds
flush_seconds_bucket{le="0.5"} 1
flush_seconds_bucket{le="1.0"} 1
flush_seconds_bucket{le="+Inf"} 2
flush_seconds_count 2
flush_seconds_sum +Inf
# HELP preferred_disk Preferred disk.
# TYPE preferred_disk stateset
preferred_disk{preferred_disk="ssd"} 0
preferred_disk{preferred_disk="hdd"} 1
# HELP promshard_collector_errors Scrapes in which a collector could not read its source.
# TYPE promshard_collector_errors counter
promshard_collector_errors_total{collector="redis"} 0
# HELP promshard_collector_panics Collector panics caught during scrapes; each cost its collector's families in that scrape.
# TYPE promshard_collector_panics counter
promshard_collector_panics_total 0
# HELP promshard_label_refused Recordings dropped because a label value was not in the metric's list (or info pairs too large).
# TYPE promshard_label_refused counter
# HELP promshard_observations_dropped Histogram observations dropped because they were NaN.
# TYPE promshard_observations_dropped counter
# HELP promshard_set_function_panics Panics of gauge functions (Gauge::set_function); each left its series at its last value.
# TYPE promshard_set_function_panics counter
promshard_set_function_panics_total 0
# HELP temperature_celsius Temperature.\nSecond \"line\" \\.
# TYPE temperature_celsius gauge
# UNIT temperature_celsius celsius
temperature_celsius -3.25
# HELP version Version.
# TYPE version info
version_info{release="1.0"} 1
"#;
    assert_eq!(declared_part(Format::OpenMetrics), openmetrics);
}
