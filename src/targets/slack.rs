//! `slack`: a Slack incoming webhook (URL from a Secret) with `text` and optional `blocks`;
//! without either, a default message per event type in an attachment coloured with the
//! event's `status_color`.

use serde_json::{Value, json};

use super::error::CompileError;
use super::fields::{Field, SecretUrl, compile_json_opt, compile_opt, render_opt};
use super::kind::{Kind, Trigger};
use super::message::{default_message, slack_escape};
use super::request::{HttpRequest, HttpTarget, RenderContext, RenderError};
use crate::expr::{JsonTemplate, Template};
use crate::secrets::SecretKeySelector;
use crate::secrets::SecretSet;

spec! {
pub struct SlackTarget {
    /// Secret key holding the incoming webhook URL (key defaults to `url`).
    pub url_secret_ref: SecretKeySelector,
    /// Message text (mrkdwn), templated. Defaults to a message for the event type.
    pub text: Option<String>,
    /// Block Kit blocks; strings are templated. `text` is then the notification fallback.
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::any_json")]
    pub blocks: Option<Value>,
}
}

#[derive(Debug)]
pub struct Slack {
    url: SecretUrl,
    text: Option<Template>,
    blocks: Option<JsonTemplate>,
}

impl Kind for SlackTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let url = SecretUrl::read(&field.at("urlSecretRef"), &self.url_secret_ref, secrets)?;
        let blocks = compile_json_opt(
            &field.at("blocks"),
            self.blocks.as_ref(),
            Value::is_array,
            "must be a list of Block Kit blocks",
        )?;
        Ok(Trigger::http(Slack {
            url,
            text: compile_opt(&field.at("text"), self.text.as_deref())?,
            blocks,
        }))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        vec![&self.url_secret_ref]
    }
}

impl HttpTarget for Slack {
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        // Event fields are shown as text: `<!channel>` in an app name pings nobody.
        let scope = ctx.scope.with_escaped_event(slack_escape)?;
        let default = default_message(scope.event());
        let body = match (render_opt(&self.text, &scope)?, &self.blocks) {
            (None, None) => {
                let mut attachment = json!({"color": default.color, "fallback": default.title});
                if let Some(text) = &default.text {
                    attachment["text"] = text.as_str().into();
                }
                json!({"text": default.title, "attachments": [attachment]})
            }
            (text, blocks) => {
                let mut body = json!({"text": text.unwrap_or(default.title)});
                if let Some(b) = blocks {
                    body["blocks"] = b.render(&scope)?;
                }
                body
            }
        };
        self.url.post_json(ctx, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_support::{compile_http, request, request_for, sample_with};

    fn secrets() -> SecretSet {
        SecretSet::new("ns").with(
            "slack",
            &[("url", "https://hooks.slack.com/services/T000/B000/XXXX")],
        )
    }

    fn body(v: Value) -> Value {
        let t = compile_http(
            &serde_json::from_value::<SlackTarget>(v).unwrap(),
            &secrets(),
        )
        .unwrap();
        let req = request(&t);
        assert_eq!(
            req.url.as_str(),
            "https://hooks.slack.com/services/T000/B000/XXXX"
        );
        assert_eq!(
            req.redact("no_service /services/T000/B000/XXXX"),
            "no_service [redacted]"
        );
        serde_json::from_slice(&req.body).unwrap()
    }

    #[test]
    fn default_message_is_a_coloured_attachment() {
        let b = body(json!({"urlSecretRef": {"name": "slack"}}));
        assert_eq!(b["text"], "✅ Build 1.2.3 (456) of Markdown Email is valid");
        assert_eq!(b["attachments"][0]["color"], "#2eb67d");
        assert_eq!(
            b["attachments"][0]["text"],
            "Build 1.2.3 (456) of Markdown Email is Valid"
        );
    }

    #[test]
    fn text_and_blocks_are_templated() {
        let b = body(
            json!({"urlSecretRef": {"name": "slack"}, "text": "$(data.app_name) is $(data.status)",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*$(data.app_name)* build $(data.build_version)"}}]}),
        );
        assert_eq!(
            b,
            json!({"text": "Markdown Email is Valid",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Markdown Email* build 456"}}]})
        );
    }

    #[test]
    fn event_fields_cannot_ping_or_link() {
        let hostile = sample_with(json!({"app_name": "<!channel> & <@U0123>",
            "message": "<https://evil.example|log in>"}));
        let slack = |v: Value| {
            let t = compile_http(
                &serde_json::from_value::<SlackTarget>(v).unwrap(),
                &secrets(),
            )
            .unwrap();
            serde_json::from_slice::<Value>(&request_for(&t, &hostile).body).unwrap()
        };
        // The route's own text keeps its markup; what the event carries is shown as text.
        let b = slack(
            json!({"urlSecretRef": {"name": "slack"}, "text": "<!here> $(data.app_name)",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*$(data.app_name)*"}}]}),
        );
        assert_eq!(b["text"], "<!here> &lt;!channel&gt; &amp; &lt;@U0123&gt;");
        assert_eq!(
            b["blocks"][0]["text"]["text"],
            "*&lt;!channel&gt; &amp; &lt;@U0123&gt;*"
        );
        let b = slack(json!({"urlSecretRef": {"name": "slack"}}));
        let shown = b.to_string();
        assert!(
            !shown.contains("<!channel>") && !shown.contains("<https:"),
            "{shown}"
        );
        assert_eq!(
            b["attachments"][0]["text"],
            "&lt;https://evil.example|log in&gt;"
        );
    }
}
