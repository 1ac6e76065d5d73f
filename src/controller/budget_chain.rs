//! The budget chain: a ResourceBudget and its parents up to the root, the one walk every
//! decision about budgets goes through (admission, the enforced limits, the local cgroup
//! layout, the cluster's quota and measured use), so a missing parent or a cycle means the
//! same everywhere.

/// A budget as the walk sees it: a name and the name of its parent.
pub trait Link {
    fn link_name(&self) -> &str;
    fn link_parent(&self) -> Option<&str>;
}

impl Link for crate::api::ResourceBudget {
    fn link_name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
    fn link_parent(&self) -> Option<&str> {
        self.spec.parent.as_deref()
    }
}

/// Why a budget has no whole chain. The messages name the budgets, as status shows them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("ResourceBudget {name:?} does not exist")]
    Missing { name: String },
    #[error("ResourceBudget {child:?} names parent {parent:?}, which does not exist")]
    MissingParent { child: String, parent: String },
    #[error("ResourceBudget parents form a cycle through {through:?}")]
    Cycle { through: String },
}

/// `name` and its ancestors, innermost first, found with `lookup`; an error for a missing
/// budget or parent, or a cycle. Bounded by the number of distinct budgets it meets.
pub fn chain<'a, B: Link + ?Sized + 'a>(
    lookup: impl Fn(&str) -> Option<&'a B>,
    name: &str,
) -> Result<Vec<&'a B>, ChainError> {
    let mut out: Vec<&'a B> = Vec::new();
    let mut cur = Some(name.to_owned());
    while let Some(n) = cur {
        let Some(b) = lookup(&n) else {
            return Err(match out.last() {
                None => ChainError::Missing { name: n },
                Some(child) => ChainError::MissingParent { child: child.link_name().to_owned(), parent: n },
            });
        };
        if out.iter().any(|seen| seen.link_name() == b.link_name()) {
            return Err(ChainError::Cycle { through: n });
        }
        out.push(b);
        cur = b.link_parent().map(str::to_owned);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct B(&'static str, Option<&'static str>);
    impl Link for B {
        fn link_name(&self) -> &str {
            self.0
        }
        fn link_parent(&self) -> Option<&str> {
            self.1
        }
    }

    #[test]
    fn the_chain_runs_from_a_budget_to_its_root_and_names_what_breaks_it() {
        let all: BTreeMap<&str, B> = [
            B("host", None),
            B("team", Some("host")),
            B("squad", Some("team")),
            B("orphan", Some("gone")),
            B("a", Some("b")),
            B("b", Some("a")),
            B("self", Some("self")),
        ]
        .into_iter()
        .map(|b| (b.0, b))
        .collect();
        let walk = |name: &str| chain(|n| all.get(n), name).map(|c| c.iter().map(|b| b.0).collect::<Vec<_>>());
        type Row = (&'static str, Result<Vec<&'static str>, &'static str>);
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("host", Ok(vec!["host"])),
            ("squad", Ok(vec!["squad", "team", "host"])),
            ("nope", Err("ResourceBudget \"nope\" does not exist")),
            ("orphan", Err("ResourceBudget \"orphan\" names parent \"gone\", which does not exist")),
            ("a", Err("ResourceBudget parents form a cycle through \"a\"")),
            ("self", Err("ResourceBudget parents form a cycle through \"self\"")),
        ];
        for (name, want) in table {
            assert_eq!(walk(name).map_err(|e| e.to_string()), want.map_err(str::to_owned), "{name}");
        }
    }
}
