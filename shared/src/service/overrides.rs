//! `override_params` of an import: project attributes that replace the
//! archive's in `tree/project.json`, and so in every later export.
//!
//! GitLab declares them with `use :optional_project_params`
//! (lib/api/project_import.rb), drops undeclared keys (`declared_params`)
//! and empty strings (`present_override_params`), and keeps only what its
//! import/export configuration lets a project's attributes hold
//! (`AttributesPermitter`). The attributes below are the ones in both lists
//! that live on the project itself; settings GitLab keeps in other records
//! (`project_feature`'s access levels, `project_setting`) are not among them.

use serde_json::Value;

use crate::{Error, Result};

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Boolean,
    Integer,
    /// `visibility`, written as GitLab stores it: `visibility_level`.
    Visibility,
}

const OVERRIDABLE: &[(&str, Kind)] = &[
    ("description", Kind::Text),
    ("visibility", Kind::Visibility),
    ("build_timeout", Kind::Integer),
    ("ci_config_path", Kind::Text),
    ("suggestion_commit_message", Kind::Text),
    ("merge_commit_template", Kind::Text),
    ("squash_commit_template", Kind::Text),
    ("request_access_enabled", Kind::Boolean),
    ("shared_runners_enabled", Kind::Boolean),
    ("only_allow_merge_if_pipeline_succeeds", Kind::Boolean),
    (
        "only_allow_merge_if_all_discussions_are_resolved",
        Kind::Boolean,
    ),
    ("printing_merge_request_link_enabled", Kind::Boolean),
    ("resolve_outdated_diff_discussions", Kind::Boolean),
    ("remove_source_branch_after_merge", Kind::Boolean),
    ("autoclose_referenced_issues", Kind::Boolean),
];

/// The overrides in `params` (`override_params[<name>]`, as a form sends
/// them and as a JSON object's members are flattened), as project
/// attributes and their JSON text. A value is `None` where the client sent
/// an array or a hash. Grape's errors for a value it cannot coerce.
pub fn from_params<'a>(
    params: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (name, value) in params {
        let Some(key) = name
            .strip_prefix("override_params[")
            .and_then(|rest| rest.strip_suffix(']'))
        else {
            continue;
        };
        let Some((_, kind)) = OVERRIDABLE.iter().find(|(known, _)| *known == key) else {
            continue;
        };
        let invalid = || Error::InvalidParameter(format!("{name} is invalid"));
        // Every declared override is a scalar: Grape refuses an array or a
        // hash in its place.
        let value = value.ok_or_else(invalid)?;
        if value.is_empty() {
            continue;
        }
        let (attribute, json) = match kind {
            Kind::Text => (key, Value::from(value)),
            Kind::Boolean => {
                let flag = match value.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "t" => true,
                    "false" | "0" | "no" | "f" => false,
                    _ => return Err(invalid()),
                };
                (key, Value::from(flag))
            }
            Kind::Integer => (
                key,
                Value::from(value.parse::<i64>().map_err(|_| invalid())?),
            ),
            Kind::Visibility => {
                let level = match value {
                    "private" => 0,
                    "internal" => 10,
                    "public" => 20,
                    _ => {
                        return Err(Error::InvalidParameter(format!(
                            "{name} does not have a valid value"
                        )))
                    }
                };
                ("visibility_level", Value::from(level))
            }
        };
        out.retain(|(existing, _): &(String, String)| existing != attribute);
        out.push((attribute.to_owned(), json.to_string()));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_coerced_as_grape_declares_them() {
        let found = from_params([
            ("override_params[description]", Some("New")),
            ("override_params[visibility]", Some("public")),
            ("override_params[build_timeout]", Some("600")),
            ("override_params[request_access_enabled]", Some("false")),
            ("override_params[unknown]", Some("dropped")),
            ("override_params[unknown_list]", None),
            ("override_params[ci_config_path]", Some("")),
            ("path", Some("not an override")),
        ])
        .unwrap();
        assert_eq!(
            found,
            [
                ("build_timeout", "600"),
                ("description", "\"New\""),
                ("request_access_enabled", "false"),
                ("visibility_level", "20"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        let bad = from_params([("override_params[visibility]", Some("secret"))]).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "override_params[visibility] does not have a valid value"
        );
        assert!(from_params([("override_params[build_timeout]", Some("soon"))]).is_err());
        let listed = from_params([("override_params[description]", None)]).unwrap_err();
        assert_eq!(
            listed.to_string(),
            "override_params[description] is invalid"
        );
    }
}
