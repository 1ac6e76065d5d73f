//! Message templates: `{{ params.NAME }}`, `{{ tasks.NAME.output }}` (the text parts) and
//! `{{ tasks.NAME.data }}` / `{{ tasks.NAME.data.field.0 }}` (the data parts as JSON, a member
//! or an array element of it).

/// One reference inside `{{ }}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ref<'a> {
    Param(&'a str),
    TaskOutput(&'a str),
    /// `tasks.NAME.data[.PATH]`: the task's data, or the value at PATH in it.
    TaskData {
        task: &'a str,
        path: Option<&'a str>,
    },
    /// `item[.PATH]`: a `forEach` expansion's item, or the value at PATH in it.
    Item(Option<&'a str>),
    /// `index`: a `forEach` expansion's position (from 0).
    Index,
}

impl Ref<'_> {
    /// The task a reference reads the output of.
    pub fn task(&self) -> Option<&str> {
        match self {
            Ref::TaskOutput(t) | Ref::TaskData { task: t, .. } => Some(t),
            Ref::Param(_) | Ref::Item(_) | Ref::Index => None,
        }
    }
}

/// A piece of a template: literal text or a reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Ref { reference: Ref<'a>, source: &'a str },
}

/// What is wrong with a template, said as what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("\"{{{{\" at character {at} is never closed with \"}}}}\"")]
    Unclosed { at: usize },
    #[error("{text}: tasks have .output and .data (write {{{{ tasks.{task}.output }}}}, not .{field})")]
    NotOutput { text: String, task: String, field: String },
    #[error("{text}: write {{{{ tasks.{task}.output }}}}")]
    NoField { text: String, task: String },
    #[error("{text} is not {{{{ params.NAME }}}} or {{{{ tasks.NAME.output }}}}")]
    Unknown { text: String },
}

/// Splits a template into pieces, or says what is wrong with it.
pub fn parse(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(TemplateError::Unclosed { at: template.len() - rest.len() + open + 1 });
        };
        let source = &rest[open..open + 2 + close + 2];
        let expr = after[..close].trim();
        pieces.push(Piece::Ref { reference: parse_ref(expr, source)?, source });
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

fn parse_ref<'a>(expr: &'a str, source: &str) -> Result<Ref<'a>, TemplateError> {
    let parts: Vec<&str> = expr.split('.').collect();
    let text = source.to_owned();
    match parts.as_slice() {
        ["params", name] if !name.is_empty() => Ok(Ref::Param(name)),
        ["item"] => Ok(Ref::Item(None)),
        ["item", rest @ ..] if rest.iter().all(|s| !s.is_empty()) => Ok(Ref::Item(Some(&expr["item.".len()..]))),
        ["index"] => Ok(Ref::Index),
        ["tasks", name, "output"] if !name.is_empty() => Ok(Ref::TaskOutput(name)),
        ["tasks", name, "data", rest @ ..] if !name.is_empty() => {
            if rest.iter().any(|s| s.is_empty()) {
                return Err(TemplateError::Unknown { text });
            }
            // The path is the rest of the expression after `tasks.NAME.data.`.
            let path = (!rest.is_empty()).then(|| &expr["tasks.".len() + name.len() + ".data.".len()..]);
            Ok(Ref::TaskData { task: name, path })
        }
        ["tasks", name, other] => {
            Err(TemplateError::NotOutput { text, task: (*name).to_owned(), field: (*other).to_owned() })
        }
        ["tasks", name] => Err(TemplateError::NoField { text, task: (*name).to_owned() }),
        _ => Err(TemplateError::Unknown { text }),
    }
}

/// Every reference in a template (for validation); errors as [`parse`].
pub fn references(template: &str) -> Result<Vec<Ref<'_>>, TemplateError> {
    Ok(parse(template)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Ref { reference, .. } => Some(reference),
            Piece::Text(_) => None,
        })
        .collect())
}

/// The largest message a template renders to: a message is sent whole, in one A2A request
/// held in memory on both ends. A few params or outputs repeated by a small template could
/// otherwise make a gigabyte.
pub const MAX_RENDERED_BYTES: usize = 4 << 20;

/// Why a template did not render.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The template itself is wrong (see [`parse`]).
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A reference the lookup cannot answer.
    #[error("{reference} has no value")]
    NoValue { reference: String },
    /// The rendered message would pass [`MAX_RENDERED_BYTES`].
    #[error(
        "the rendered message is larger than {} MiB (at {at} when filling {reference}); a2a sends messages of at most {limit} bytes",
        MAX_RENDERED_BYTES >> 20
    )]
    TooLarge { reference: String, at: usize, limit: usize },
}

/// Fills a template. `lookup` answers each reference; a reference it cannot answer is an
/// error naming it. The result never grows past [`MAX_RENDERED_BYTES`]: the piece that would
/// pass it is an error, before it is copied.
pub fn render<'a>(
    template: &'a str,
    lookup: impl FnMut(&Ref<'a>) -> Option<std::borrow::Cow<'a, str>>,
) -> Result<String, RenderError> {
    render_bounded(template, MAX_RENDERED_BYTES, lookup)
}

/// [`render`] with another bound.
pub fn render_bounded<'a>(
    template: &'a str,
    limit: usize,
    mut lookup: impl FnMut(&Ref<'a>) -> Option<std::borrow::Cow<'a, str>>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len().min(limit));
    let push = |out: &mut String, s: &str, source: &str| {
        if out.len() + s.len() > limit {
            return Err(RenderError::TooLarge { reference: source.to_owned(), at: out.len(), limit });
        }
        out.push_str(s);
        Ok(())
    };
    for piece in parse(template)? {
        match piece {
            Piece::Text(t) => push(&mut out, t, "text")?,
            Piece::Ref { reference, source } => match lookup(&reference) {
                Some(v) => push(&mut out, &v, source)?,
                None => return Err(RenderError::NoValue { reference: source.to_owned() }),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_params_and_task_outputs() {
        let refs = references("Summarise {{ tasks.fetch.output }} for {{params.audience}}.").unwrap();
        assert_eq!(refs, vec![Ref::TaskOutput("fetch"), Ref::Param("audience")]);
        assert_eq!(references("no templates here").unwrap(), vec![]);
    }

    #[test]
    fn bad_templates_say_what_to_write() {
        assert_eq!(
            references("{{ tasks.fetch.result }}").unwrap_err().to_string(),
            "{{ tasks.fetch.result }}: tasks have .output and .data (write {{ tasks.fetch.output }}, not .result)"
        );
        assert_eq!(
            references("hi {{ params.x").unwrap_err().to_string(),
            "\"{{\" at character 4 is never closed with \"}}\""
        );
        assert_eq!(
            references("{{ env.HOME }}").unwrap_err().to_string(),
            "{{ env.HOME }} is not {{ params.NAME }} or {{ tasks.NAME.output }}"
        );
    }

    #[test]
    fn data_references_carry_their_path() {
        let refs = references("{{ tasks.a.data }} {{ tasks.a.data.trip.stops.0 }}").unwrap();
        assert_eq!(
            refs,
            vec![Ref::TaskData { task: "a", path: None }, Ref::TaskData { task: "a", path: Some("trip.stops.0") }]
        );
        assert!(references("{{ tasks.a.data..x }}").is_err());
        assert!(references("{{ tasks.a.data. }}").is_err());
    }

    #[test]
    fn render_substitutes_every_reference() {
        let out = render("a={{ params.a }} b={{ tasks.t.output }}", |r| match r {
            Ref::Param("a") => Some("1".into()),
            Ref::TaskOutput("t") => Some("two".into()),
            _ => None,
        });
        assert_eq!(out.unwrap(), "a=1 b=two");
        assert_eq!(render("{{ params.z }}", |_| None).unwrap_err().to_string(), "{{ params.z }} has no value");
    }

    #[test]
    fn rendering_stops_at_the_bound_before_copying() {
        // 1 MiB of param, referenced 1,000 times: 1 GiB if nothing stopped it.
        let big = "x".repeat(1 << 20);
        let template = "{{ params.p }}".repeat(1000);
        let lookup = |_: &Ref<'_>| Some(std::borrow::Cow::Borrowed(big.as_str()));
        let err = render(&template, lookup).unwrap_err();
        assert_eq!(
            err,
            RenderError::TooLarge { reference: "{{ params.p }}".to_owned(), at: 4 << 20, limit: MAX_RENDERED_BYTES }
        );
        assert_eq!(
            err.to_string(),
            "the rendered message is larger than 4 MiB (at 4194304 when filling {{ params.p }}); a2a sends messages of at most 4194304 bytes"
        );
        // Exactly at the bound is fine; one byte more is not, text included.
        assert_eq!(render_bounded("ab{{ params.p }}", 5, |_| Some("cde".into())).unwrap(), "abcde");
        assert!(matches!(
            render_bounded("ab{{ params.p }}!", 5, |_| Some("cde".into())),
            Err(RenderError::TooLarge { at: 5, .. })
        ));
    }
}
