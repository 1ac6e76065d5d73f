//! Message templates: `{{ params.NAME }}` and `{{ tasks.NAME.output }}`.

/// One reference inside `{{ }}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ref<'a> {
    Param(&'a str),
    TaskOutput(&'a str),
}

/// A piece of a template: literal text or a reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Ref { reference: Ref<'a>, source: &'a str },
}

/// Splits a template into pieces, or says what is wrong with it.
pub fn parse(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(format!(
                "\"{{{{\" at character {} is never closed with \"}}}}\"",
                template.len() - rest.len() + open + 1
            ));
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

fn parse_ref<'a>(expr: &'a str, source: &str) -> Result<Ref<'a>, String> {
    let parts: Vec<&str> = expr.split('.').collect();
    match parts.as_slice() {
        ["params", name] if !name.is_empty() => Ok(Ref::Param(name)),
        ["tasks", name, "output"] if !name.is_empty() => Ok(Ref::TaskOutput(name)),
        ["tasks", name, other] => {
            Err(format!("{source}: tasks have only .output (write {{{{ tasks.{name}.output }}}}, not .{other})"))
        }
        ["tasks", name] => Err(format!("{source}: write {{{{ tasks.{name}.output }}}}")),
        _ => Err(format!("{source} is not {{{{ params.NAME }}}} or {{{{ tasks.NAME.output }}}}")),
    }
}

/// Every reference in a template (for validation); errors as [`parse`].
pub fn references(template: &str) -> Result<Vec<Ref<'_>>, String> {
    Ok(parse(template)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Ref { reference, .. } => Some(reference),
            Piece::Text(_) => None,
        })
        .collect())
}

/// Fills a template. `lookup` answers each reference; a reference it cannot answer is an
/// error naming it.
pub fn render<'a>(
    template: &'a str,
    mut lookup: impl FnMut(&Ref<'a>) -> Option<std::borrow::Cow<'a, str>>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for piece in parse(template)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Ref { reference, source } => match lookup(&reference) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("{source} has no value")),
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
            references("{{ tasks.fetch.result }}").unwrap_err(),
            "{{ tasks.fetch.result }}: tasks have only .output (write {{ tasks.fetch.output }}, not .result)"
        );
        assert_eq!(references("hi {{ params.x").unwrap_err(), "\"{{\" at character 4 is never closed with \"}}\"");
        assert_eq!(
            references("{{ env.HOME }}").unwrap_err(),
            "{{ env.HOME }} is not {{ params.NAME }} or {{ tasks.NAME.output }}"
        );
    }

    #[test]
    fn render_substitutes_every_reference() {
        let out = render("a={{ params.a }} b={{ tasks.t.output }}", |r| match r {
            Ref::Param("a") => Some("1".into()),
            Ref::TaskOutput("t") => Some("two".into()),
            _ => None,
        });
        assert_eq!(out.unwrap(), "a=1 b=two");
        assert_eq!(render("{{ params.z }}", |_| None).unwrap_err(), "{{ params.z }} has no value");
    }
}
