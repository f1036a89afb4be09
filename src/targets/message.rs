//! The default chat message for an event, for Slack and Teams targets that set no text of
//! their own: a title in the spirit of the Statused examples ("🎉 App v1.2 is live!"), the
//! event's own message, a colour and the facts worth showing. Pure; any field may be missing.

use serde_json::Value;

use crate::event::normalize_status;

/// Slack's mrkdwn control characters as Slack documents escaping them
/// (<https://api.slack.com/reference/surfaces/formatting#escaping>): an app named
/// `<!channel>` is shown, not announced.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Adaptive Card text is a CommonMark subset (bold, italic, lists, links:
/// <https://learn.microsoft.com/adaptive-cards/create/textfeatures>): the characters that
/// start that markup, and angle brackets, are backslash-escaped so that event text cannot
/// become a link or formatting.
pub fn markdown_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '[' | ']' | '(' | ')' | '<' | '>' | '`'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub title: String,
    pub text: Option<String>,
    /// `#rrggbb`: the event's `status_color` when it has one.
    pub color: String,
    pub tone: Tone,
    pub facts: Vec<(String, String)>,
}

/// Good news, bad news, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Bad,
    Neutral,
}

pub fn default_message(event: &Value) -> Message {
    let data = &event["data"];
    let field = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let app = field("app_name").unwrap_or("Your app");
    let status = field("status").unwrap_or("updated");
    let norm = normalize_status(status);
    let version = field("version")
        .map(|v| format!(" v{v}"))
        .unwrap_or_default();
    let build = match (field("version"), field("build_version")) {
        (Some(v), Some(b)) => format!(" {v} ({b})"),
        (Some(v), None) => format!(" {v}"),
        (None, Some(b)) => format!(" build {b}"),
        (None, None) => String::new(),
    };
    let event_type = event["type"].as_str().unwrap_or_default();
    let (title, tone) = match event_type {
        "com.statused.app.status.updated" => match norm.as_str() {
            "ready for sale" => (format!("🎉 {app}{version} is live!"), Tone::Good),
            "rejected" | "metadata rejected" | "invalid binary" => (
                format!("❌ {app}{version} was rejected ({status})"),
                Tone::Bad,
            ),
            _ => (format!("📱 {app}{version}: {status}"), Tone::Neutral),
        },
        "com.statused.build.status.updated" => match norm.as_str() {
            "failed" | "invalid" => (
                format!("⚠️ Build processing failed for {app}{build} ({status})"),
                Tone::Bad,
            ),
            "valid" => (format!("✅ Build{build} of {app} is valid"), Tone::Good),
            _ => (format!("🔨 Build{build} of {app}: {status}"), Tone::Neutral),
        },
        "com.statused.account.status.updated" => {
            (format!("👤 Developer account: {status}"), Tone::Neutral)
        }
        other => (format!("Statused: {other} ({status})"), Tone::Neutral),
    };
    let color = field("status_color")
        .filter(|c| {
            c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|h| h.is_ascii_hexdigit())
        })
        .map(str::to_string)
        .unwrap_or_else(|| {
            match tone {
                Tone::Good => "#2eb67d",
                Tone::Bad => "#e01e5a",
                Tone::Neutral => "#1eb6fc",
            }
            .to_string()
        });
    let facts = [
        ("App", "app_name"),
        ("Version", "version"),
        ("Build", "build_version"),
        ("Status", "status"),
        ("Store", "store_name"),
        ("Track", "track"),
        ("Rollout", "user_distribution"),
    ]
    .iter()
    .filter_map(|(label, key)| field(key).map(|v| (label.to_string(), v.to_string())))
    .collect();
    Message {
        title,
        text: field("message").map(str::to_string),
        color,
        tone,
        facts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Value {
        serde_json::from_slice(&crate::test_support::sample(name)).unwrap()
    }

    #[test]
    fn release_is_celebrated_with_the_events_colour() {
        let m = default_message(&sample("app-ready-for-sale.json"));
        assert_eq!(m.title, "🎉 Markdown Email v1.2.3 is live!");
        assert_eq!(m.color, "#1eb6fc");
        assert_eq!(m.tone, Tone::Good);
        assert!(
            m.facts
                .contains(&("Track".to_string(), "Production".to_string()))
        );
        let renamed = default_message(&sample("app-ready-for-distribution.json"));
        assert!(renamed.title.ends_with("is live!"), "{}", renamed.title);
    }

    #[test]
    fn rejection_and_failed_builds_are_bad_news() {
        let m = default_message(&sample("app-rejected.json"));
        assert!(m.title.starts_with("❌ Markdown Email"), "{}", m.title);
        assert_eq!(m.tone, Tone::Bad);
        let m = default_message(&sample("build-invalid.json"));
        assert!(
            m.title.starts_with("⚠️ Build processing failed for "),
            "{}",
            m.title
        );
    }

    #[test]
    fn account_events_and_missing_fields_still_read_well() {
        let m = default_message(&sample("account-agreement.json"));
        assert_eq!(m.title, "👤 Developer account: Action Required");
        assert!(m.text.unwrap().contains("License Agreement"));
        let m = default_message(
            &serde_json::json!({"type": "com.statused.app.status.updated", "data": {}}),
        );
        assert_eq!(m.title, "📱 Your app: updated");
        assert!(m.facts.is_empty());
    }
}
