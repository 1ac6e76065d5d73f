//! Quantities (`512Mi`, `500m`, `60%`), pid counts, percentages and durations: parsed once
//! into typed values, with the text the user wrote kept for a faithful round trip.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Why a scalar's text is not a value of its kind. Each message names the text and what
/// is wrong with it; the field path is added by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{what} {text:?} has spaces around it; write {trimmed:?}")]
    Spaces { what: &'static str, text: String, trimmed: String },
    #[error("empty {what}")]
    Empty { what: &'static str },
    #[error("{what} {text:?} is negative")]
    Negative { what: &'static str, text: String },
    #[error("{what} {text:?} is not a number with an optional unit (examples: 512Mi, 2Gi, 500m, 1.5)")]
    NotANumber { what: &'static str, text: String },
    #[error("{what} {text:?} has an unknown unit {suffix:?}{hint}; units are {SUFFIXES}")]
    UnknownUnit { what: &'static str, text: String, suffix: String, hint: &'static str },
    #[error("{what} {text:?} is too large")]
    TooLarge { what: &'static str, text: String },
    #[error("memory quantity {text:?} is a fraction of a byte (\"m\" means milli); did you mean {suggestion}Mi?")]
    FractionOfAByte { text: String, suggestion: String },
    #[error("cpu quantity {text:?} uses a size unit; write cores (2, 1.5) or millicores (500m)")]
    CpuSizeUnit { text: String },
    #[error("cpu quantity {text:?} is below 1m, the smallest amount")]
    BelowOneMillicore { text: String },
    #[error("cpu quantity {text:?} is finer than 1m, the smallest step")]
    FinerThanOneMillicore { text: String },
    #[error("{what} {text:?} is not a percentage (example: 60%)")]
    NotAPercentage { what: &'static str, text: String },
    #[error("{what} {text:?} has more than two decimals")]
    TooManyDecimals { what: &'static str, text: String },
    #[error("{what} {text:?} must be above 0% and at most 100%")]
    PercentOutOfRange { what: &'static str, text: String },
    #[error("percentage {text:?} must end in % (example: \"90%\")")]
    NoPercentSign { text: String },
    #[error("pid count must be at least 1")]
    NoPids,
    #[error("pid count {text:?} is not a whole number")]
    NotAWholeNumber { text: String },
    #[error("duration {text:?} has no unit; write {trimmed}s, {trimmed}m or {trimmed}h")]
    DurationWithoutUnit { text: String, trimmed: String },
    #[error("duration {text:?} is not like 90s, 5m, 1h30m or 250ms")]
    NotADuration { text: String },
    #[error("duration {text:?} has a number without a unit")]
    NumberWithoutUnit { text: String },
    #[error("duration {text:?}: days are not a unit; write hours (24h)")]
    Days { text: String },
    #[error("duration {text:?} has an unknown unit {unit:?}; units are ns, us, ms, s, m, h")]
    UnknownDurationUnit { text: String, unit: String },
    #[error("duration {text:?} is too long")]
    TooLong { text: String },
    #[error("expected {expected}, got {got}")]
    WrongType { expected: &'static str, got: &'static str },
}

/// What a scalar field means: how its text is parsed and how its schema reads.
pub trait ScalarKind {
    /// The parsed value.
    type Value: Copy + fmt::Debug + PartialEq;
    /// The schema `format` that names this kind; validation looks scalars up by it.
    const FORMAT: &'static str;
    /// Whether a bare integer is accepted (`memory: 1073741824`) besides a string.
    const INT_OR_STRING: bool;
    /// One sentence for the schema description.
    const DESCRIPTION: &'static str;
    fn parse(text: &str) -> Result<Self::Value, Error>;
    fn from_int(n: i64) -> Result<Self::Value, Error> {
        Self::parse(&n.to_string())
    }
}

/// How the user wrote a scalar: kept so that YAML → typed → YAML is exact.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Written {
    Int(i64),
    Text(String),
}

/// A parsed scalar of kind `K` that remembers how it was written.
pub struct Scalar<K: ScalarKind> {
    value: K::Value,
    written: Written,
    kind: PhantomData<K>,
}

impl<K: ScalarKind> Scalar<K> {
    /// The parsed value.
    pub fn value(&self) -> K::Value {
        self.value
    }

    /// The value as written, e.g. `512Mi`.
    pub fn as_written(&self) -> Cow<'_, str> {
        match &self.written {
            Written::Int(n) => Cow::Owned(n.to_string()),
            Written::Text(s) => Cow::Borrowed(s),
        }
    }

    /// Checks a JSON value the way deserialization would, without building the scalar.
    /// Used by schema-driven validation to report every bad scalar at once.
    pub fn check_json(value: &serde_json::Value) -> Result<(), Error> {
        match value {
            serde_json::Value::String(s) => K::parse(s).map(|_| ()),
            serde_json::Value::Number(n) if K::INT_OR_STRING => match n.as_i64() {
                Some(i) => K::from_int(i).map(|_| ()),
                None => K::parse(&n.to_string()).map(|_| ()),
            },
            other => Err(Error::WrongType {
                expected: if K::INT_OR_STRING { "a number or a string" } else { "a string" },
                got: json_type_name(other),
            }),
        }
    }
}

impl<K: ScalarKind> std::str::FromStr for Scalar<K> {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(Self { value: K::parse(s)?, written: Written::Text(s.to_owned()), kind: PhantomData })
    }
}

impl<K: ScalarKind> Clone for Scalar<K> {
    fn clone(&self) -> Self {
        Self { value: self.value, written: self.written.clone(), kind: PhantomData }
    }
}

impl<K: ScalarKind> PartialEq for Scalar<K> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value && self.written == other.written
    }
}

impl<K: ScalarKind> fmt::Debug for Scalar<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:?})", K::FORMAT, self.as_written())
    }
}

impl<K: ScalarKind> fmt::Display for Scalar<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_written())
    }
}

impl<K: ScalarKind> Serialize for Scalar<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.written {
            Written::Int(n) => s.serialize_i64(*n),
            Written::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de, K: ScalarKind> Deserialize<'de> for Scalar<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<K>(PhantomData<K>);
        impl<K: ScalarKind> Visitor<'_> for V<K> {
            type Value = Scalar<K>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(K::DESCRIPTION)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar<K>, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar<K>, E> {
                if !K::INT_OR_STRING {
                    return Err(E::invalid_type(de::Unexpected::Signed(n), &self));
                }
                Ok(Scalar { value: K::from_int(n).map_err(E::custom)?, written: Written::Int(n), kind: PhantomData })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar<K>, E> {
                let n = i64::try_from(n).map_err(|_| E::custom(format!("{n} is too large")))?;
                self.visit_i64(n)
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scalar<K>, E> {
                if !K::INT_OR_STRING {
                    return Err(E::invalid_type(de::Unexpected::Float(n), &self));
                }
                // A YAML float such as `cpu: 0.5` is kept as its text.
                let text = n.to_string();
                Ok(Scalar {
                    value: K::parse(&text).map_err(E::custom)?,
                    written: Written::Text(text),
                    kind: PhantomData,
                })
            }
        }
        d.deserialize_any(V::<K>(PhantomData))
    }
}

impl<K: ScalarKind> JsonSchema for Scalar<K> {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed(K::FORMAT)
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        if K::INT_OR_STRING {
            json_schema!({
                "description": K::DESCRIPTION,
                "format": K::FORMAT,
                "x-kubernetes-int-or-string": true,
            })
        } else {
            json_schema!({
                "description": K::DESCRIPTION,
                "format": K::FORMAT,
                "type": "string",
            })
        }
    }
}

pub(crate) fn json_type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(n) if n.is_f64() => "a decimal number",
        serde_json::Value::Number(_) => "an integer",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// A non-negative decimal as `digits × 10^-scale`, parsed without floating point.
#[derive(Clone, Copy, Debug)]
struct Decimal {
    digits: u128,
    scale: u32,
}

impl Decimal {
    /// Parses `12`, `1.5`, `.5`, with an optional exponent `1e3`, `2.5E-2`.
    fn parse(s: &str) -> Option<(Decimal, &str)> {
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut digits: u128 = 0;
        let mut scale: i64 = 0;
        let mut seen_digit = false;
        let mut in_fraction = false;
        while i < bytes.len() {
            match bytes[i] {
                b @ b'0'..=b'9' => {
                    digits = digits.checked_mul(10)?.checked_add(u128::from(b - b'0'))?;
                    seen_digit = true;
                    if in_fraction {
                        scale += 1;
                    }
                }
                b'.' if !in_fraction => in_fraction = true,
                _ => break,
            }
            i += 1;
        }
        if !seen_digit {
            return None;
        }
        let mut rest = &s[i..];
        // An exponent is `e`/`E` followed by an optionally signed integer. A lone `E` is the
        // exa suffix, so only treat it as an exponent when digits follow.
        if let Some(exp) = rest.strip_prefix(['e', 'E']) {
            let (neg, body) = match exp.as_bytes().first() {
                Some(b'-') => (true, &exp[1..]),
                Some(b'+') => (false, &exp[1..]),
                _ => (false, exp),
            };
            let n = body.bytes().take_while(u8::is_ascii_digit).count();
            if n > 0 {
                let e: i64 = body[..n].parse().ok()?;
                scale = if neg { scale.checked_add(e)? } else { scale.checked_sub(e)? };
                rest = &body[n..];
            }
        }
        // Zero is zero at any exponent (and `0e999999999999` must not take 10^12 steps below).
        if digits == 0 {
            scale = 0;
        }
        // Normalise a negative scale (a positive exponent) into the digits.
        while scale < 0 {
            digits = digits.checked_mul(10)?;
            scale += 1;
        }
        Some((Decimal { digits, scale: u32::try_from(scale).ok()? }, rest))
    }

    /// `self × num / den`, rounded up; `None` on overflow.
    fn scaled_ceil(self, num: u128, den: u128) -> Option<u128> {
        let den = den.checked_mul(10u128.checked_pow(self.scale)?)?;
        let n = self.digits.checked_mul(num)?;
        Some(n.div_ceil(den))
    }

    /// Whether `self × num / den` is a whole number.
    fn is_whole(self, num: u128, den: u128) -> bool {
        let Some(den) = 10u128.checked_pow(self.scale).and_then(|p| p.checked_mul(den)) else {
            return false;
        };
        self.digits.checked_mul(num).is_some_and(|n| n % den == 0)
    }
}

/// A Kubernetes quantity suffix as a ratio `num / den`.
fn suffix_ratio(suffix: &str) -> Option<(u128, u128)> {
    Some(match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1000u128.pow(2), 1),
        "G" => (1000u128.pow(3), 1),
        "T" => (1000u128.pow(4), 1),
        "P" => (1000u128.pow(5), 1),
        "E" => (1000u128.pow(6), 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        _ => return None,
    })
}

const SUFFIXES: &str = "Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, m";

/// Refuses text with spaces around it, as Kubernetes and Go do (`" 64Mi"` is not a
/// quantity); YAML has already dropped the spaces of an unquoted value.
fn untrimmed<'a>(text: &'a str, what: &'static str) -> Result<&'a str, Error> {
    let t = text.trim();
    if t.len() != text.len() && !t.is_empty() {
        return Err(Error::Spaces { what, text: text.to_owned(), trimmed: t.to_owned() });
    }
    Ok(t)
}

/// A quantity: an optional `+` (as in Kubernetes; `+64Mi` is `64Mi`), a decimal, a unit.
fn parse_quantity(text: &str, what: &'static str) -> Result<(Decimal, u128, u128), Error> {
    let t = untrimmed(text, what)?;
    if t.is_empty() {
        return Err(Error::Empty { what });
    }
    if t.starts_with('-') {
        return Err(Error::Negative { what, text: text.to_owned() });
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let Some((dec, suffix)) = Decimal::parse(t) else {
        return Err(Error::NotANumber { what, text: text.to_owned() });
    };
    let Some((num, den)) = suffix_ratio(suffix) else {
        let hint = match suffix.to_ascii_lowercase().as_str() {
            "kb" | "kib" => " (did you mean Ki?)",
            "mb" | "mib" => " (did you mean Mi?)",
            "gb" | "gib" => " (did you mean Gi?)",
            "tb" | "tib" => " (did you mean Ti?)",
            "b" => " (bytes need no unit)",
            _ => "",
        };
        return Err(Error::UnknownUnit { what, text: text.to_owned(), suffix: suffix.to_owned(), hint });
    };
    Ok((dec, num, den))
}

/// Memory in bytes: `512Mi`, `2Gi`, `1G`, `1073741824`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryKind;

impl ScalarKind for MemoryKind {
    type Value = u64;
    const FORMAT: &'static str = "memory-quantity";
    const INT_OR_STRING: bool = true;
    const DESCRIPTION: &'static str = "Bytes, in Kubernetes quantity syntax: 512Mi, 2Gi, 1G, 1073741824.";

    fn parse(text: &str) -> Result<u64, Error> {
        let what = "memory quantity";
        let (dec, num, den) = parse_quantity(text, what)?;
        if den > 1 && !dec.is_whole(num, den) {
            return Err(Error::FractionOfAByte {
                text: text.to_owned(),
                suggestion: text.trim_end_matches('m').to_owned(),
            });
        }
        let too_large = || Error::TooLarge { what, text: text.to_owned() };
        let bytes = dec.scaled_ceil(num, den).ok_or_else(too_large)?;
        u64::try_from(bytes).map_err(|_| too_large())
    }
}

/// A CPU amount: cores (`2`, `1.5`, `500m`) or a share of the host's cores (`60%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuAmount {
    /// Thousandths of a core.
    Millicores(u64),
    /// Hundredths of a percent of all host cores (`6000` = 60%).
    HostShare { basis_points: u32 },
}

impl CpuAmount {
    /// The amount in millicores on a host with `host_cores` cores.
    pub fn millicores(self, host_cores: u32) -> u64 {
        match self {
            CpuAmount::Millicores(m) => m,
            CpuAmount::HostShare { basis_points } => {
                (u64::from(host_cores) * 1000 * u64::from(basis_points)).div_ceil(10_000)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuKind;

impl ScalarKind for CpuKind {
    type Value = CpuAmount;
    const FORMAT: &'static str = "cpu-quantity";
    const INT_OR_STRING: bool = true;
    const DESCRIPTION: &'static str =
        "CPU in cores (2, 1.5, 500m) or as a share of all host cores (\"60%\"; local mode only).";

    fn parse(text: &str) -> Result<CpuAmount, Error> {
        if let Some(p) = text.trim().strip_suffix('%') {
            untrimmed(text, "cpu share")?;
            return parse_percent(p, text, "cpu share").map(|basis_points| CpuAmount::HostShare { basis_points });
        }
        let (dec, num, den) = parse_quantity(text, "cpu quantity")?;
        if num > 1 {
            return Err(Error::CpuSizeUnit { text: text.to_owned() });
        }
        let milli = dec
            .scaled_ceil(num * 1000, den)
            .and_then(|m| u64::try_from(m).ok())
            .ok_or_else(|| Error::TooLarge { what: "cpu quantity", text: text.to_owned() })?;
        if !dec.is_whole(num * 1000, den) {
            let text = text.to_owned();
            return Err(if milli <= 1 {
                Error::BelowOneMillicore { text }
            } else {
                Error::FinerThanOneMillicore { text }
            });
        }
        Ok(CpuAmount::Millicores(milli))
    }
}

fn parse_percent(number: &str, text: &str, what: &'static str) -> Result<u32, Error> {
    let Some((dec, "")) = Decimal::parse(number.trim()) else {
        return Err(Error::NotAPercentage { what, text: text.to_owned() });
    };
    if !dec.is_whole(100, 1) {
        return Err(Error::TooManyDecimals { what, text: text.to_owned() });
    }
    let bp = dec.scaled_ceil(100, 1).unwrap_or(u128::MAX);
    if bp == 0 || bp > 10_000 {
        return Err(Error::PercentOutOfRange { what, text: text.to_owned() });
    }
    Ok(bp as u32)
}

/// A count of processes (threads included): `pids: 64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidsKind;

impl ScalarKind for PidsKind {
    type Value = u64;
    const FORMAT: &'static str = "pid-count";
    const INT_OR_STRING: bool = true;
    const DESCRIPTION: &'static str = "A number of processes and threads, e.g. 64.";

    fn parse(text: &str) -> Result<u64, Error> {
        let t = untrimmed(text, "pid count")?;
        if t.starts_with('-') {
            return Err(Error::Negative { what: "pid count", text: text.to_owned() });
        }
        match t.parse::<u64>() {
            Ok(0) => Err(Error::NoPids),
            Ok(n) => Ok(n),
            Err(_) => Err(Error::NotAWholeNumber { text: text.to_owned() }),
        }
    }
}

/// A percentage threshold: `90%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PercentKind;

impl ScalarKind for PercentKind {
    /// Hundredths of a percent: `9000` = 90%.
    type Value = u32;
    const FORMAT: &'static str = "percent";
    const INT_OR_STRING: bool = false;
    const DESCRIPTION: &'static str = "A percentage, e.g. \"90%\".";

    fn parse(text: &str) -> Result<u32, Error> {
        match untrimmed(text, "percentage")?.strip_suffix('%') {
            Some(p) => parse_percent(p, text, "percentage"),
            None => Err(Error::NoPercentSign { text: text.to_owned() }),
        }
    }
}

/// A duration in Go syntax, as Kubernetes writes them: `90s`, `5m`, `1h30m`, `250ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationKind;

impl ScalarKind for DurationKind {
    type Value = std::time::Duration;
    const FORMAT: &'static str = "duration";
    const INT_OR_STRING: bool = false;
    const DESCRIPTION: &'static str = "A duration: 90s, 5m, 1h30m, 250ms.";

    fn parse(text: &str) -> Result<std::time::Duration, Error> {
        let what = "duration";
        let t = untrimmed(text, what)?;
        if t.is_empty() {
            return Err(Error::Empty { what });
        }
        let text_owned = || text.to_owned();
        if t.starts_with('-') {
            return Err(Error::Negative { what, text: text_owned() });
        }
        if t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::DurationWithoutUnit { text: text_owned(), trimmed: t.to_owned() });
        }
        let mut rest = t;
        let mut nanos: u128 = 0;
        while !rest.is_empty() {
            let Some((dec, after)) = Decimal::parse(rest) else {
                return Err(Error::NotADuration { text: text_owned() });
            };
            let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
            let unit = &after[..unit_len];
            let per: u128 = match unit {
                "ns" => 1,
                "us" | "µs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "" => return Err(Error::NumberWithoutUnit { text: text_owned() }),
                "d" => return Err(Error::Days { text: text_owned() }),
                other => return Err(Error::UnknownDurationUnit { text: text_owned(), unit: other.to_owned() }),
            };
            nanos = dec
                .scaled_ceil(per, 1)
                .and_then(|n| nanos.checked_add(n))
                .ok_or_else(|| Error::TooLong { text: text_owned() })?;
            rest = &after[unit_len..];
        }
        let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| Error::TooLong { text: text_owned() })?;
        Ok(std::time::Duration::new(secs, (nanos % 1_000_000_000) as u32))
    }
}

/// Bytes of memory.
pub type Memory = Scalar<MemoryKind>;
/// Cores, millicores, or a share of the host.
pub type Cpu = Scalar<CpuKind>;
/// A process count.
pub type Pids = Scalar<PidsKind>;
/// A percentage.
pub type Percent = Scalar<PercentKind>;
/// A duration.
pub type Duration = Scalar<DurationKind>;

/// Checks a JSON scalar against the kind named by a schema `format`; `None` for formats
/// that are not ours.
pub fn check_format(format: &str, value: &serde_json::Value) -> Option<Result<(), Error>> {
    Some(match format {
        MemoryKind::FORMAT => Memory::check_json(value),
        CpuKind::FORMAT => Cpu::check_json(value),
        PidsKind::FORMAT => Pids::check_json(value),
        PercentKind::FORMAT => Percent::check_json(value),
        DurationKind::FORMAT => Duration::check_json(value),
        _ => return None,
    })
}

/// Formats a byte count the way people write limits: `512Mi`, `1.5Gi`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] = [("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10), ("", 1)];
    for (unit, size) in UNITS {
        if bytes >= size && size > 1 {
            let whole = bytes / size;
            let tenth = (bytes % size) * 10 / size;
            return if tenth == 0 { format!("{whole}{unit}") } else { format!("{whole}.{tenth}{unit}") };
        }
    }
    bytes.to_string()
}

/// Formats millicores as `500m` or `2`.
pub fn format_millicores(m: u64) -> String {
    if m.is_multiple_of(1000) { (m / 1000).to_string() } else { format!("{m}m") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(s: &str) -> Result<u64, String> {
        MemoryKind::parse(s).map_err(|e| e.to_string())
    }
    fn cpu(s: &str) -> Result<CpuAmount, String> {
        CpuKind::parse(s).map_err(|e| e.to_string())
    }

    #[test]
    fn memory_quantities_follow_kubernetes_syntax() {
        assert_eq!(mem("512Mi"), Ok(512 << 20));
        assert_eq!(mem("2Gi"), Ok(2 << 30));
        assert_eq!(mem("1G"), Ok(1_000_000_000));
        assert_eq!(mem("1.5Gi"), Ok(3 << 29));
        assert_eq!(mem("1e3"), Ok(1000));
        assert_eq!(mem("1E"), Ok(10u64.pow(18)));
        assert_eq!(mem("128974848"), Ok(128_974_848));
        assert_eq!(mem("0.1Ki"), Ok(103), "fractions of a byte round up, as in Kubernetes");
    }

    #[test]
    fn memory_mistakes_get_actionable_errors() {
        assert_eq!(
            mem("512MB").unwrap_err(),
            "memory quantity \"512MB\" has an unknown unit \"MB\" (did you mean Mi?); units are Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, m"
        );
        assert_eq!(
            mem("500m").unwrap_err(),
            "memory quantity \"500m\" is a fraction of a byte (\"m\" means milli); did you mean 500Mi?"
        );
        assert_eq!(mem("-1Gi").unwrap_err(), "memory quantity \"-1Gi\" is negative");
        assert!(mem("lots").unwrap_err().contains("is not a number"));
        assert!(mem("99999999999Ei").unwrap_err().contains("too large"));
    }

    #[test]
    fn cpu_is_cores_millicores_or_a_host_share() {
        assert_eq!(cpu("500m"), Ok(CpuAmount::Millicores(500)));
        assert_eq!(cpu("2"), Ok(CpuAmount::Millicores(2000)));
        assert_eq!(cpu("1.5"), Ok(CpuAmount::Millicores(1500)));
        assert_eq!(cpu("60%"), Ok(CpuAmount::HostShare { basis_points: 6000 }));
        assert_eq!(cpu("12.5%"), Ok(CpuAmount::HostShare { basis_points: 1250 }));
        assert_eq!(CpuAmount::HostShare { basis_points: 6000 }.millicores(2), 1200);
        assert_eq!(cpu("0.0001").unwrap_err(), "cpu quantity \"0.0001\" is below 1m, the smallest amount");
        assert_eq!(cpu("1.0005").unwrap_err(), "cpu quantity \"1.0005\" is finer than 1m, the smallest step");
        assert_eq!(cpu("150%").unwrap_err(), "cpu share \"150%\" must be above 0% and at most 100%");
        assert!(cpu("2Gi").unwrap_err().contains("uses a size unit"));
    }

    #[test]
    fn spaces_signs_and_huge_exponents_are_defined() {
        // Kubernetes and Go refuse spaces around a quantity or a duration.
        assert_eq!(mem(" 64Mi").unwrap_err(), "memory quantity \" 64Mi\" has spaces around it; write \"64Mi\"");
        assert_eq!(cpu("500m ").unwrap_err(), "cpu quantity \"500m \" has spaces around it; write \"500m\"");
        assert!(cpu(" 60%").unwrap_err().contains("has spaces around it"));
        assert!(PidsKind::parse("64 ").unwrap_err().to_string().contains("has spaces around it"));
        assert!(PercentKind::parse(" 90%").unwrap_err().to_string().contains("has spaces around it"));
        assert!(DurationKind::parse(" 5m").unwrap_err().to_string().contains("has spaces around it"));
        // A leading + is accepted, as Kubernetes accepts it.
        assert_eq!(mem("+64Mi"), Ok(64 << 20));
        assert_eq!(cpu("+500m"), Ok(CpuAmount::Millicores(500)));
        // Zero at an exponent too large to count to, and exponents that overflow.
        assert_eq!(mem("0e999999999999999999"), Ok(0));
        assert!(mem("1e999999999999999999").unwrap_err().contains("is not a number"));
        assert!(mem("0.5e-9223372036854775807").unwrap_err().contains("is not a number"));
        assert!(mem("1e99").is_err());
    }

    #[test]
    fn durations_use_go_syntax() {
        use std::time::Duration as D;
        assert_eq!(DurationKind::parse("90s"), Ok(D::from_secs(90)));
        assert_eq!(DurationKind::parse("5m"), Ok(D::from_secs(300)));
        assert_eq!(DurationKind::parse("1h30m"), Ok(D::from_secs(5400)));
        assert_eq!(DurationKind::parse("250ms"), Ok(D::from_millis(250)));
        assert_eq!(DurationKind::parse("1.5s"), Ok(D::from_millis(1500)));
        assert_eq!(
            DurationKind::parse("30").unwrap_err().to_string(),
            "duration \"30\" has no unit; write 30s, 30m or 30h"
        );
        assert_eq!(
            DurationKind::parse("2d").unwrap_err().to_string(),
            "duration \"2d\": days are not a unit; write hours (24h)"
        );
        assert!(DurationKind::parse("5 minutes").unwrap_err().to_string().contains("unknown unit"));
    }

    #[test]
    fn errors_say_what_is_wrong_as_values_callers_can_tell_apart() {
        let text = "-1Gi".to_owned();
        assert_eq!(MemoryKind::parse("-1Gi"), Err(Error::Negative { what: "memory quantity", text }));
        assert_eq!(PidsKind::parse("0"), Err(Error::NoPids));
        assert!(matches!(DurationKind::parse("2d"), Err(Error::Days { .. })));
        let e = serde_json::from_str::<Memory>("\"512MB\"").unwrap_err().to_string();
        assert!(
            e.contains("has an unknown unit \"MB\" (did you mean Mi?)"),
            "deserializing reports the same text: {e}"
        );
    }

    #[test]
    fn scalars_keep_what_was_written() {
        let m: Memory = serde_json::from_str("\"0.5Gi\"").unwrap();
        assert_eq!(m.value(), 512 << 20);
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"0.5Gi\"");
        let m: Memory = serde_json::from_str("1024").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "1024");
        let c: Cpu = serde_yaml_ng::from_str("0.5").unwrap();
        assert_eq!(c.value(), CpuAmount::Millicores(500));
        assert!(serde_json::from_str::<Percent>("90").is_err(), "a percentage must be a string");
    }

    #[test]
    fn byte_and_cpu_formatting_reads_like_limits() {
        assert_eq!(format_bytes(512 << 20), "512Mi");
        assert_eq!(format_bytes(3 << 29), "1.5Gi");
        assert_eq!(format_bytes(100), "100");
        assert_eq!(format_millicores(1500), "1500m");
        assert_eq!(format_millicores(2000), "2");
    }
}
