//! The standard `process_*` metrics (the names every official Prometheus client library
//! exports, so existing dashboards and alerts work unchanged), read from `/proc/self` at
//! scrape time. On a system without procfs the family is simply absent.

use procfs::WithCurrentSystemInfo;
use procfs::process::{LimitValue, Process};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Reads this process's resource use on each scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One scrape's reading; a field is `None` when `/proc` would not say.
#[derive(Debug, Default)]
struct Reading {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl Reading {
    fn now() -> Reading {
        let Ok(me) = Process::myself() else {
            return Reading::default();
        };
        let mut reading = Reading {
            open_fds: me.fd_count().ok().map(|n| n as u64),
            max_fds: me
                .limits()
                .ok()
                .and_then(|l| match l.max_open_files.soft_limit {
                    LimitValue::Value(n) => Some(n),
                    LimitValue::Unlimited => None,
                }),
            ..Reading::default()
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            reading.cpu_seconds = Some((stat.utime + stat.stime) as f64 / ticks);
            reading.resident_bytes = Some(stat.rss_bytes().get());
            reading.virtual_bytes = Some(stat.vsize);
            reading.start_time_seconds = procfs::boot_time_secs()
                .ok()
                .map(|boot| boot as f64 + stat.starttime as f64 / ticks);
        }
        reading
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reading = Reading::now();
        if let Some(seconds) = reading.cpu_seconds {
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            ConstCounter::new(seconds).encode(metric)?;
        }
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory size",
                Some(Unit::Bytes),
                reading.resident_bytes.map(|b| b as f64),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size",
                Some(Unit::Bytes),
                reading.virtual_bytes.map(|b| b as f64),
            ),
            (
                "process_start_time",
                "Start time of the process since the Unix epoch",
                Some(Unit::Seconds),
                reading.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                reading.open_fds.map(|n| n as f64),
            ),
            (
                "process_max_fds",
                "The soft limit on open file descriptors",
                None,
                reading.max_fds.map(|n| n as f64),
            ),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(value) = value {
                let metric =
                    encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
                ConstGauge::new(value).encode(metric)?;
            }
        }
        Ok(())
    }
}
