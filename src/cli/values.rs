//! Parsers of flag values (clap `value_parser`s): durations, sizes, fractions, priority
//! classes. clap shows their errors as `invalid value 'X' for '--flag <V>': <error>`.

use std::time::Duration;

use crate::api::Priority;
use crate::api::quantity::{DurationKind, MemoryKind, ScalarKind};

/// Why a flag's value is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A duration or size that is not a Kubernetes-style quantity (the reason comes from the
    /// quantity parser the manifests use too).
    #[error(transparent)]
    Quantity(#[from] crate::api::quantity::Error),
    #[error("must be more than 0s")]
    Zero,
    #[error("{text:?} is not a number between 0 and 1")]
    NotANumber { text: String },
    #[error("{text} is not between 0 and 1")]
    OutOfRange { text: String },
    #[error("{text:?} is not PRIORITY=CLASS (example: critical=a2a-critical)")]
    NotAPair { text: String },
    #[error("unknown priority {priority:?}; priorities are critical, high, normal, low, background")]
    UnknownPriority { priority: String },
    #[error("{text:?} names no PriorityClass after '='")]
    NoClass { text: String },
}

/// `90s`, `5m`, `1h`.
pub fn duration(text: &str) -> Result<Duration, ValueError> {
    DurationKind::parse(text).map_err(ValueError::from)
}

/// A [`duration`] longer than zero.
pub fn positive_duration(text: &str) -> Result<Duration, ValueError> {
    match duration(text)? {
        d if d.is_zero() => Err(ValueError::Zero),
        d => Ok(d),
    }
}

/// A size in bytes, written as a Kubernetes memory quantity (`64Mi`, `1G`, `1048576`).
pub fn bytes(text: &str) -> Result<u64, ValueError> {
    MemoryKind::parse(text).map_err(ValueError::from)
}

/// A fraction from 0 to 1.
pub fn fraction(text: &str) -> Result<f64, ValueError> {
    let f: f64 = text.parse().map_err(|_| ValueError::NotANumber { text: text.to_owned() })?;
    if (0.0..=1.0).contains(&f) { Ok(f) } else { Err(ValueError::OutOfRange { text: text.to_owned() }) }
}

/// `PRIORITY=CLASS`: the Kubernetes PriorityClass for agents of an a2a priority.
pub fn priority_class(text: &str) -> Result<(Priority, String), ValueError> {
    let (p, class) = text.split_once('=').ok_or_else(|| ValueError::NotAPair { text: text.to_owned() })?;
    let priority = [Priority::Critical, Priority::High, Priority::Normal, Priority::Low, Priority::Background]
        .into_iter()
        .find(|x| x.as_str() == p.trim())
        .ok_or_else(|| ValueError::UnknownPriority { priority: p.to_owned() })?;
    let class = class.trim();
    if class.is_empty() {
        return Err(ValueError::NoClass { text: text.to_owned() });
    }
    Ok((priority, class.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_that_are_wrong_say_why() {
        assert_eq!(positive_duration("0s"), Err(ValueError::Zero));
        assert_eq!(positive_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(matches!(duration("soon"), Err(ValueError::Quantity(_))));
        assert_eq!(bytes("1Ki"), Ok(1024));
        assert_eq!(fraction("0.5"), Ok(0.5));
        assert_eq!(fraction("2").unwrap_err().to_string(), "2 is not between 0 and 1");
        assert_eq!(fraction("half").unwrap_err().to_string(), "\"half\" is not a number between 0 and 1");
    }
}
