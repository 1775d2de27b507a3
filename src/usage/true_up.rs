//! The true-up table: each metric's peak (gauges) or total (counters) per month, over
//! all instances, against the limit in force hour by hour.

use std::collections::BTreeMap;

use super::journal::{Record, Span};
use super::month_of;

/// One row of the true-up table: a metric's peak (gauges, summed over instances hour by
/// hour) or total (counters) in a month, against the largest limit in force then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrueUpRow {
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// The metric.
    pub metric: String,
    /// `peak` or `total`.
    pub measure: &'static str,
    /// The value.
    pub value: u64,
    /// The limit in force in the hour of the peak (gauges) or at the month's last hour
    /// with records (counters): `limits.<metric>` of a license in force then,
    /// `max_instances` for `iosetu_replicas`; `None` where no license limits it.
    pub limit: Option<u64>,
    /// Gauges: the sum over instances of each one's own peak that month, beside `value`
    /// (the peak of the hourly sum): an upper bound where instances' hours do not line
    /// up. `None` for counters.
    pub instance_peaks: Option<u64>,
    /// Hours of the month whose value (gauges: the hour's sum; counters: the month's
    /// total so far) exceeded the limit in force in that hour.
    pub over_hours: u64,
}

impl TrueUpRow {
    /// Whether any hour of the month was over the limit in force in it.
    pub fn over(&self) -> bool {
        self.over_hours > 0
    }
}

/// The true-up table over each instance's records (each branch of a fork an instance).
///
/// Gauges: per hour, each instance's peak in that hour summed over instances; the month's
/// row is the largest such sum, beside the sum of each instance's own peak that month (an
/// upper bound where instances' hours do not line up: clocks an hour apart, restarts).
/// Counters: the month's total. Each hour is compared with the limit in force in that
/// hour (the largest of the licenses whose `exp` had not passed, as the monitor takes
/// it), so a trial's higher limit never covers the hours after it.
pub(super) fn true_up(instances: &[Vec<&Record>]) -> Vec<TrueUpRow> {
    type Hours<'a> = BTreeMap<i64, BTreeMap<&'a str, u64>>;
    let mut sums: Hours<'_> = BTreeMap::new();
    let mut limits: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
    let mut counts: Hours<'_> = BTreeMap::new();
    for records in instances {
        let mut own: Hours<'_> = BTreeMap::new();
        for record in records {
            let first = record.start.div_euclid(3600);
            let hours = match record.span {
                Span::Hour => first..first + 1,
                Span::Day => first..first + 24,
            };
            for hour in hours.clone() {
                let in_force = limits.entry(hour).or_default();
                for license in record.licenses.iter().filter(|l| l.exp > hour * 3600) {
                    let named = license.limits.iter().map(|(k, v)| (k.clone(), *v));
                    let replicas = license
                        .max_instances
                        .map(|m| (super::REPLICAS.to_owned(), m));
                    for (name, limit) in named.chain(replicas) {
                        let e = in_force.entry(name).or_insert(limit);
                        *e = (*e).max(limit);
                    }
                }
                for (name, &peak) in &record.gauges {
                    let e = own
                        .entry(hour)
                        .or_default()
                        .entry(name.as_str())
                        .or_default();
                    *e = (*e).max(peak);
                }
            }
            for (name, &total) in &record.counters {
                let e = counts
                    .entry(first)
                    .or_default()
                    .entry(name.as_str())
                    .or_default();
                *e = e.saturating_add(total);
            }
        }
        for (hour, peaks) in own {
            for (name, peak) in peaks {
                let e = sums.entry(hour).or_default().entry(name).or_default();
                *e = e.saturating_add(peak);
            }
        }
    }
    let mut instance_peaks: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for records in instances {
        let mut own: BTreeMap<(String, &str), u64> = BTreeMap::new();
        for record in records {
            for (name, &peak) in &record.gauges {
                let e = own
                    .entry((month_of(record.start), name.as_str()))
                    .or_default();
                *e = (*e).max(peak);
            }
        }
        for (key, peak) in own {
            let e = instance_peaks.entry(key).or_default();
            *e = e.saturating_add(peak);
        }
    }
    let limit_at = |hour: i64, name: &str| limits.get(&hour).and_then(|l| l.get(name)).copied();
    let mut rows: BTreeMap<(String, String), TrueUpRow> = BTreeMap::new();
    for (hour, hour_sums) in &sums {
        let month = month_of(hour * 3600);
        for (&name, &sum) in hour_sums {
            let limit = limit_at(*hour, name);
            let row = rows
                .entry((month.clone(), name.to_owned()))
                .or_insert_with(|| TrueUpRow {
                    month: month.clone(),
                    metric: name.to_owned(),
                    measure: "peak",
                    value: 0,
                    limit: None,
                    instance_peaks: instance_peaks.get(&(month.clone(), name)).copied(),
                    over_hours: 0,
                });
            if sum > row.value || row.limit.is_none() && sum == row.value {
                row.value = sum;
                row.limit = limit;
            }
            if limit.is_some_and(|l| sum > l) {
                row.over_hours += 1;
            }
        }
    }
    // Counters: the month's total so far, hour by hour, against the limit in force then.
    for (hour, hour_counts) in &counts {
        let month = month_of(hour * 3600);
        for (&name, &count) in hour_counts {
            let row = rows
                .entry((month.clone(), name.to_owned()))
                .or_insert_with(|| TrueUpRow {
                    month: month.clone(),
                    metric: name.to_owned(),
                    measure: "total",
                    value: 0,
                    limit: None,
                    instance_peaks: None,
                    over_hours: 0,
                });
            row.value = row.value.saturating_add(count);
            if let Some(limit) = limit_at(*hour, name) {
                row.limit = Some(limit);
                if row.value > limit {
                    row.over_hours += 1;
                }
            }
        }
    }
    rows.into_values().collect()
}
