//! Reconcile-time helpers every kind uses on its spec fields: URLs, credentials, templates,
//! durations, and the path of a field for error messages.

use std::collections::BTreeMap;
use std::fmt;

use reqwest::Url;

use super::error::CompileError;
use super::request::{HttpRequest, RenderContext, RenderError, base_headers};
use crate::conditions::Reason;
use crate::expr::{JsonTemplate, Scope, Template};
use crate::secrets::{SecretKeySelector, SecretSet, SecretValue};

/// Where a value sits in a route, for error messages:
/// `spec.rules[0].targets[1].gitlabPipeline.ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field(String);

impl Field {
    pub fn new(path: impl Into<String>) -> Self {
        Self(path.into())
    }

    /// The field `name` inside this one.
    pub fn at(&self, name: &str) -> Field {
        Field(format!("{}.{name}", self.0))
    }

    /// Item `index` of this list.
    pub fn index(&self, index: usize) -> Field {
        Field(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses an http(s) URL, for reconcile-time validation. The URL itself is not echoed because
/// it may come from a Secret.
pub fn parse_http_url(field: impl fmt::Display + Copy, raw: &str) -> Result<Url, CompileError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| CompileError::invalid(field, format!("not a valid URL ({e})")))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(url),
        // The scheme is not echoed: a malformed `user:pass@host` parses as scheme `user`.
        _ => Err(CompileError::invalid(
            field,
            "URL must be http or https with a host",
        )),
    }
}

/// A Go duration as Tekton and Argo accept it: `1h30m`, `45s`, `1.5h`, `0`.
pub fn check_duration(field: impl fmt::Display + Copy, value: &str) -> Result<(), CompileError> {
    crate::duration::parse_go_duration(value)
        .map(|_| ())
        .ok_or_else(|| {
            CompileError::invalid(
                field,
                format!("{value:?} is not a duration like 1h30m or 45m"),
            )
        })
}

/// A JSON body whose strings are templates; without one, the whole CloudEvent is sent.
#[derive(Debug)]
pub struct EventBody(Option<JsonTemplate>);

impl EventBody {
    pub fn compile(
        field: impl fmt::Display + Copy,
        spec: Option<&serde_json::Value>,
    ) -> Result<Self, CompileError> {
        spec.map(JsonTemplate::compile)
            .transpose()
            .map(Self)
            .map_err(|e| CompileError::template(field, e))
    }

    pub fn render(&self, scope: &Scope) -> Result<serde_json::Value, RenderError> {
        match &self.0 {
            Some(t) => Ok(t.render(scope)?),
            None => Ok(scope.event().clone()),
        }
    }
}

/// A URL read from a Secret (incoming-webhook URLs embed their token): `Debug` shows only
/// the host.
#[derive(Clone)]
pub struct SecretUrl(pub Url);

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretUrl")
            .field(&self.0.host_str())
            .finish()
    }
}

impl SecretUrl {
    /// The http(s) URL `sel` points at (key defaults to `url`); `field` is the selector's.
    pub fn read(
        field: &Field,
        sel: &SecretKeySelector,
        secrets: &SecretSet,
    ) -> Result<Self, CompileError> {
        Ok(Self(parse_http_url(field, &secrets.text(sel, "url")?)?))
    }

    /// A JSON POST to this URL, which is redacted from anything recorded about the answer.
    pub fn post_json(
        &self,
        ctx: &RenderContext<'_>,
        body: &serde_json::Value,
    ) -> Result<HttpRequest, RenderError> {
        Ok(HttpRequest::post_json(self.0.clone(), base_headers(ctx)?, body).secret_url(&self.0))
    }
}

/// `(name, template)` pairs from a map of templated strings (variables, inputs, parameters).
pub fn compile_templates(
    field: impl fmt::Display + Copy,
    map: &BTreeMap<String, String>,
) -> Result<Vec<(String, Template)>, CompileError> {
    map.iter()
        .map(|(k, v)| {
            if k.trim().is_empty() {
                return Err(CompileError::invalid(field, "names must not be empty"));
            }
            let t = Template::compile(v)
                .map_err(|e| CompileError::template(format!("{field}.{k}"), e))?;
            Ok((k.clone(), t))
        })
        .collect()
}

pub fn render_templates(
    templates: &[(String, Template)],
    scope: &Scope,
) -> Result<Vec<(String, String)>, RenderError> {
    templates
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.render(scope)?)))
        .collect()
}

/// An optional JSON field whose strings are templated, refused with `problem` unless
/// `valid` accepts it.
pub fn compile_json_opt(
    field: &Field,
    value: Option<&serde_json::Value>,
    valid: impl Fn(&serde_json::Value) -> bool,
    problem: &str,
) -> Result<Option<JsonTemplate>, CompileError> {
    match value {
        None => Ok(None),
        Some(v) if valid(v) => JsonTemplate::compile(v)
            .map(Some)
            .map_err(|e| CompileError::template(field, e)),
        Some(_) => Err(CompileError::invalid(field, problem)),
    }
}

/// An optional templated string field.
pub fn compile_opt(
    field: impl fmt::Display + Copy,
    value: Option<&str>,
) -> Result<Option<Template>, CompileError> {
    value
        .map(|v| Template::compile(v).map_err(|e| CompileError::template(field, e)))
        .transpose()
}

pub fn render_opt(t: &Option<Template>, scope: &Scope) -> Result<Option<String>, RenderError> {
    t.as_ref()
        .map(|t| t.render(scope))
        .transpose()
        .map_err(Into::into)
}

/// A base URL (default or user override), without its trailing slash.
pub fn base_url(
    field: impl fmt::Display + Copy,
    value: Option<&str>,
    default: &str,
) -> Result<String, CompileError> {
    let url = parse_http_url(field, value.unwrap_or(default))?;
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// `base` joined with `path` (which starts with `/`).
pub fn join_url(
    field: impl fmt::Display + Copy,
    base: &str,
    path: &str,
) -> Result<Url, CompileError> {
    Url::parse(&format!("{base}{path}")).map_err(|e| CompileError::invalid(field, e))
}

/// A non-empty credential from a Secret.
pub fn credential(
    field: impl fmt::Display + Copy,
    sel: &SecretKeySelector,
    default_key: &str,
    secrets: &SecretSet,
) -> Result<SecretValue, CompileError> {
    let value = secrets.text(sel, default_key)?;
    if value.is_empty() {
        return Err(CompileError::invalid(
            field,
            format!(
                "Secret {} key {} is empty",
                sel.name,
                sel.key_or(default_key)
            ),
        ));
    }
    Ok(SecretValue::new(value))
}

/// The token a kind reads from `tokenSecretRef` (key defaults to `token`).
pub fn token(
    field: &Field,
    sel: &SecretKeySelector,
    secrets: &SecretSet,
) -> Result<SecretValue, CompileError> {
    credential(&field.at("tokenSecretRef"), sel, "token", secrets)
}

/// A credential's text (Secrets are checked to be UTF-8 when read).
pub fn credential_text(value: &SecretValue) -> &str {
    std::str::from_utf8(value.as_bytes()).unwrap_or_default()
}

/// Refuses the list or map at `field` when it has more than `max` entries. The CRD bounds it
/// too (`maxItems`, `maxProperties`), but an API server whose CRD lacks the bound (an older
/// chart) accepts any number: the compiler checks again, so that such a route is not Ready.
pub fn at_most(field: impl fmt::Display, count: usize, max: usize) -> Result<(), CompileError> {
    if count > max {
        return Err(CompileError {
            reason: Reason::InvalidTarget,
            message: format!("{field} has {count} entries; at most {max} are allowed"),
        });
    }
    Ok(())
}

/// A field that must be set and non-empty.
pub fn required(field: impl fmt::Display + Copy, value: &str) -> Result<&str, CompileError> {
    if value.trim().is_empty() {
        Err(CompileError::invalid(field, "is required"))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_are_checked() {
        for ok in ["0", "1h", "1h30m", "45m0s", "1.5h", "300ms"] {
            assert!(check_duration("f", ok).is_ok(), "{ok}");
        }
        for bad in ["", "1", "h", "an hour", "1d", "-1h", "1h-"] {
            assert!(check_duration("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn at_most_names_the_field_the_count_and_the_limit() {
        assert!(at_most("f", 4, 4).is_ok());
        let err = at_most("t.tags", 5, 4).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidTarget);
        assert_eq!(err.message, "t.tags has 5 entries; at most 4 are allowed");
    }
}

/// A templated field that must render to one of `allowed` (`trigger` / `resolve`, `on` /
/// `off`): checked at reconcile time when it has no `$(...)`, else when rendered.
#[derive(Debug)]
pub struct Choice {
    template: Template,
    allowed: &'static [&'static str],
}

impl Choice {
    pub fn compile(
        field: impl fmt::Display + Copy,
        value: Option<&str>,
        allowed: &'static [&'static str],
    ) -> Result<Self, CompileError> {
        let text = value.unwrap_or(allowed[0]);
        let template = Template::compile(text).map_err(|e| CompileError::template(field, e))?;
        if !text.contains("$(") && !allowed.contains(&text) {
            return Err(CompileError::invalid(
                field,
                format!("{text:?} is not one of {}", allowed.join(", ")),
            ));
        }
        Ok(Self { template, allowed })
    }

    pub fn render(&self, scope: &Scope) -> Result<&'static str, RenderError> {
        let value = self.template.render(scope)?;
        self.allowed
            .iter()
            .find(|a| **a == value.trim())
            .copied()
            .ok_or_else(|| {
                RenderError::Invalid(format!(
                    "rendered {value:?}, which is not one of {}",
                    self.allowed.join(", ")
                ))
            })
    }
}

/// The key an incident is found again by, unless the route sets one: route, app and version,
/// so that one rejection opens one incident and a later event of that version can resolve it.
pub fn incident_key(scope: &Scope) -> String {
    let (namespace, route) = scope.route();
    let data = &scope.event()["data"];
    let text = |k: &str| data.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let version = match text("version") {
        "" => text("build_version"),
        v => v,
    };
    format!(
        "statused/{namespace}/{route}/{}/{version}",
        text("app_name")
    )
}

/// `value` as one URL path segment: `/` and the like percent-encoded, unreserved characters
/// (`-`, `_`, `.`, `~`) kept.
pub fn path_segment(value: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
}
