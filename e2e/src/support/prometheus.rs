//! Values read off a Prometheus text page, as a pod's `/metrics` serves it.

/// The value of the first sample of metric `name` whose labels contain `label` (if given),
/// e.g. `value(page, "locus_store_loads_total", Some("result=\"found\""))`.
pub fn value(page: &str, name: &str, label: Option<&str>) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .find(|l| label.is_none_or(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `http://<address>/metrics`, or an empty page if it cannot be read.
pub async fn scrape(http: &reqwest::Client, address: &str) -> String {
    let url = format!("http://{address}/metrics");
    match http.get(&url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_by_name_and_label() {
        let page = "# HELP x\nlocus_store_sessions 42\nlocus_store_sessions_extra 1\n\
                    locus_store_loads_total{result=\"new\"} 3\nlocus_store_loads_total{result=\"found\"} 7\n";
        assert_eq!(value(page, "locus_store_sessions", None), Some(42.0));
        assert_eq!(
            value(page, "locus_store_loads_total", Some("result=\"found\"")),
            Some(7.0)
        );
        assert_eq!(value(page, "missing", None), None);
    }
}
