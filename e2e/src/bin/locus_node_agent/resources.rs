//! `resourceFieldRef`: a container's CPU, memory and ephemeral-storage requests and limits,
//! as a kubelet hands them to the container through the downward API.
//!
//! The value is the quantity divided by the divisor (default 1) and rounded up, as the
//! kubelet does. An unset limit is the node's capacity (for memory, the host's `MemTotal`;
//! for CPU, the host's CPUs), as on a kubelet where it is the node's allocatable amount; an
//! unset request is the limit if one is set, else 0. The agent enforces none of them (it runs
//! no cgroups): a real node's kubelet and runtime do.

use k8s_openapi::api::core::v1::{Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Why a `resourceFieldRef` has no value.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResourceError {
    /// The named container is not in the pod.
    #[error("resourceFieldRef: no container {0:?} in the pod")]
    NoContainer(String),
    /// A resource the downward API does not offer.
    #[error("resourceFieldRef: unsupported resource {0:?}")]
    Resource(String),
    /// A quantity that does not parse, or a zero divisor.
    #[error("resourceFieldRef: bad quantity {0:?}")]
    Quantity(String),
}

/// The value of `selector` for `container` (the container the variable is set on, used when
/// the selector names none).
pub fn resource_value(
    pod: &Pod,
    container: &str,
    selector: &ResourceFieldSelector,
) -> Result<String, ResourceError> {
    let name = selector.container_name.as_deref().unwrap_or(container);
    let found = pod
        .spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == name)
        .ok_or_else(|| ResourceError::NoContainer(name.to_owned()))?;
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| ResourceError::Resource(selector.resource.clone()))?;
    let capacity = match resource {
        "memory" => host_memory(),
        "cpu" => std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok())
            .map_or(1.0, f64::from),
        "ephemeral-storage" => 0.0,
        _ => return Err(ResourceError::Resource(selector.resource.clone())),
    };
    let resources = found.resources.as_ref();
    let get = |map: Option<&std::collections::BTreeMap<String, Quantity>>| {
        map.and_then(|m| m.get(resource))
            .map(|q| parse_quantity(&q.0))
            .transpose()
    };
    let limit = get(resources.and_then(|r| r.limits.as_ref()))?;
    let value = match kind {
        "limits" => limit.unwrap_or(capacity),
        "requests" => get(resources.and_then(|r| r.requests.as_ref()))?
            .or(limit)
            .unwrap_or(0.0),
        _ => return Err(ResourceError::Resource(selector.resource.clone())),
    };
    let divisor = match &selector.divisor {
        Some(d) => parse_quantity(&d.0)?,
        None => 1.0,
    };
    if divisor <= 0.0 {
        return Err(ResourceError::Quantity(
            selector
                .divisor
                .as_ref()
                .map(|d| d.0.clone())
                .unwrap_or_default(),
        ));
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "quantities are non-negative and far below 2^63 here"
    )]
    let rounded = (value / divisor).ceil() as u64;
    Ok(rounded.to_string())
}

/// A Kubernetes quantity (`128Mi`, `0.5`, `250m`, `1e3`, `2G`) in base units.
pub fn parse_quantity(text: &str) -> Result<f64, ResourceError> {
    let bad = || ResourceError::Quantity(text.to_owned());
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        exponent => {
            let power: i32 = exponent
                .strip_prefix(['e', 'E'])
                .and_then(|p| p.parse().ok())
                .ok_or_else(bad)?;
            10.0_f64.powi(power)
        }
    };
    if number < 0.0 || !number.is_finite() {
        return Err(bad());
    }
    Ok(number * scale)
}

/// The host's memory (`MemTotal` of `/proc/meminfo`), in bytes.
fn host_memory() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        let close = |text: &str, want: f64| {
            let got = parse_quantity(text).unwrap();
            assert!(
                (got - want).abs() <= want * 1e-12,
                "{text}: {got} != {want}"
            );
        };
        close("128Mi", 134_217_728.0);
        close("1Gi", 1_073_741_824.0);
        close("2G", 2e9);
        close("250m", 0.25);
        close("1.5", 1.5);
        close("1e3", 1000.0);
        close("12345", 12345.0);
        for bad in ["", "Mi", "12Q", "-1", "1.2.3"] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
    }

    fn pod(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Pod {
        let map = |pairs: &[(&str, &str)]| {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
                    .collect()
            })
        };
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    resources: Some(ResourceRequirements {
                        limits: map(limits),
                        requests: map(requests),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn selector(resource: &str, divisor: Option<&str>) -> ResourceFieldSelector {
        ResourceFieldSelector {
            container_name: None,
            divisor: divisor.map(|d| Quantity(d.into())),
            resource: resource.into(),
        }
    }

    #[test]
    fn limits_and_requests_with_divisors() {
        let p = pod(&[("memory", "128Mi"), ("cpu", "1500m")], &[("cpu", "250m")]);
        let get = |r: &str, d: Option<&str>| resource_value(&p, "app", &selector(r, d));
        assert_eq!(get("limits.memory", None).unwrap(), "134217728");
        assert_eq!(get("limits.memory", Some("1Mi")).unwrap(), "128");
        assert_eq!(get("limits.cpu", None).unwrap(), "2", "rounded up");
        assert_eq!(get("requests.cpu", Some("1m")).unwrap(), "250");
        assert_eq!(
            get("requests.memory", None).unwrap(),
            "134217728",
            "an unset request is the limit"
        );
        assert!(get("limits.gpus", None).is_err());
        assert!(get("limits.memory", Some("0")).is_err());
        let other = ResourceFieldSelector {
            container_name: Some("missing".into()),
            ..selector("limits.memory", None)
        };
        assert_eq!(
            resource_value(&p, "app", &other),
            Err(ResourceError::NoContainer("missing".into()))
        );
    }

    #[test]
    fn an_unset_memory_limit_is_the_hosts_memory() {
        let p = pod(&[], &[]);
        let value: u64 = resource_value(&p, "app", &selector("limits.memory", None))
            .unwrap()
            .parse()
            .unwrap();
        assert!(value > 1 << 20, "{value}");
    }
}
