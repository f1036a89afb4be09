//! `teams`: a Microsoft Teams Workflows webhook ("When a Teams webhook request is received"),
//! sent a message with one Adaptive Card attachment.

use serde_json::{Value, json};

use super::error::CompileError;
use super::fields::{Field, SecretUrl, compile_json_opt, compile_opt, render_opt};
use super::kind::{Kind, Trigger};
use super::message::{Tone, default_message, markdown_escape};
use super::request::{HttpRequest, HttpTarget, RenderContext, RenderError};
use crate::expr::{JsonTemplate, Template};
use crate::secrets::SecretKeySelector;
use crate::secrets::SecretSet;

pub const ADAPTIVE_CARD: &str = "application/vnd.microsoft.card.adaptive";

spec! {
pub struct TeamsTarget {
    /// Secret key holding the workflow's webhook URL (key defaults to `url`).
    pub url_secret_ref: SecretKeySelector,
    /// Card title, templated. Defaults to a title for the event type.
    pub title: Option<String>,
    /// Card text, templated. Defaults to the event's message.
    pub text: Option<String>,
    /// A whole Adaptive Card (`{"type": "AdaptiveCard", ...}`) instead; strings are templated.
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::any_object")]
    pub card: Option<Value>,
}
}

#[derive(Debug)]
pub struct Teams {
    url: SecretUrl,
    title: Option<Template>,
    text: Option<Template>,
    card: Option<JsonTemplate>,
}

impl Kind for TeamsTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let url = SecretUrl::read(&field.at("urlSecretRef"), &self.url_secret_ref, secrets)?;
        let adaptive = |v: &Value| v.get("type").and_then(Value::as_str) == Some("AdaptiveCard");
        if self.card.as_ref().is_some_and(adaptive) && (self.title.is_some() || self.text.is_some())
        {
            return Err(CompileError::invalid(
                field,
                "set either card or title/text",
            ));
        }
        let card = compile_json_opt(
            &field.at("card"),
            self.card.as_ref(),
            adaptive,
            "must be an Adaptive Card with type AdaptiveCard",
        )?;
        Ok(Trigger::http(Teams {
            url,
            title: compile_opt(&field.at("title"), self.title.as_deref())?,
            text: compile_opt(&field.at("text"), self.text.as_deref())?,
            card,
        }))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        vec![&self.url_secret_ref]
    }
}

impl HttpTarget for Teams {
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        // Event fields are shown as text, never as links or formatting.
        let scope = ctx.scope.with_escaped_event(markdown_escape)?;
        let content = match &self.card {
            Some(card) => card.render(&scope)?,
            None => {
                let default = default_message(scope.event());
                let title = render_opt(&self.title, &scope)?.unwrap_or(default.title);
                let text = render_opt(&self.text, &scope)?.or(default.text);
                let color = match default.tone {
                    Tone::Good => "Good",
                    Tone::Bad => "Attention",
                    Tone::Neutral => "Accent",
                };
                let mut body = vec![
                    json!({"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium",
                                           "color": color, "wrap": true}),
                ];
                if let Some(text) = text {
                    body.push(json!({"type": "TextBlock", "text": text, "wrap": true}));
                }
                if !default.facts.is_empty() {
                    let facts: Vec<Value> = default
                        .facts
                        .iter()
                        .map(|(t, v)| json!({"title": t, "value": v}))
                        .collect();
                    body.push(json!({"type": "FactSet", "facts": facts}));
                }
                json!({"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                       "version": "1.4", "body": body})
            }
        };
        let message = json!({"type": "message", "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": null, "content": content}]});
        self.url.post_json(ctx, &message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_support::{compile_http, request};
    use crate::targets::test_support::{request_for, sample_with};

    #[test]
    fn message_has_one_adaptive_card_with_title_and_facts() {
        let secrets = SecretSet::new("ns").with("teams", &[("url", "https://prod-1.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=SECRETsig")]);
        let t = compile_http(
            &serde_json::from_value::<TeamsTarget>(json!({"urlSecretRef": {"name": "teams"}}))
                .unwrap(),
            &secrets,
        )
        .unwrap();
        let req = request(&t);
        let b: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(b["type"], "message");
        assert_eq!(b["attachments"].as_array().unwrap().len(), 1);
        let a = &b["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["contentUrl"], Value::Null);
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(
            a["content"]["body"][0]["text"],
            "✅ Build 1.2.3 (456) of Markdown Email is valid"
        );
        assert_eq!(
            a["content"]["body"][2]["facts"][0],
            json!({"title": "App", "value": "Markdown Email"})
        );
        assert_eq!(
            req.redact("bad signature SECRETsig"),
            "bad signature [redacted]"
        );
        assert!(
            !req.redact(&format!("echo {}", req.url))
                .contains("SECRETsig")
        );
    }

    #[test]
    fn a_card_that_is_not_adaptive_is_rejected() {
        let secrets = SecretSet::new("ns").with("teams", &[("url", "https://example.com/x")]);
        let spec: TeamsTarget = serde_json::from_value(
            json!({"urlSecretRef": {"name": "teams"}, "card": {"type": "MessageCard"}}),
        )
        .unwrap();
        assert!(
            compile_http(&spec, &secrets)
                .unwrap_err()
                .message
                .contains("t.card")
        );
    }

    #[test]
    fn event_fields_cannot_become_links_or_formatting() {
        let hostile = sample_with(json!({"app_name": "[Log in](https://evil.example) *now*",
            "message": "<at>everyone</at>"}));
        let secrets = SecretSet::new("ns").with("teams", &[("url", "https://example.com/x")]);
        let t = compile_http(
            &serde_json::from_value::<TeamsTarget>(
                json!({"urlSecretRef": {"name": "teams"}, "text": "**Heads up:** $(data.app_name)"}),
            )
            .unwrap(),
            &secrets,
        )
        .unwrap();
        let b: Value = serde_json::from_slice(&request_for(&t, &hostile).body).unwrap();
        let body = &b["attachments"][0]["content"]["body"];
        assert_eq!(
            body[1]["text"],
            "**Heads up:** \\[Log in\\]\\(https://evil.example\\) \\*now\\*"
        );
        let shown = b.to_string();
        assert!(!shown.contains("](https://evil"), "{shown}");
        assert!(!shown.contains("<at>"), "{shown}");
    }
}
