//! A project's members as this server keeps them: the records of GitLab's
//! `project_members` relation (`tree/project/project_members.ndjson`), each
//! naming its user (`user: {id, public_email, username}`) and access level.
//! The members API reads them; a migration writes them, matched to the
//! destination's users.

use serde_json::{json, Map, Value};

/// GitLab's access levels a member may have (Guest to Owner; Minimal
/// access, 5, belongs to groups).
pub const ACCESS_LEVELS: &[u64] = &[10, 15, 20, 30, 40, 50];

/// One member of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The user's id on the instance that keeps the record.
    pub user_id: u64,
    pub username: String,
    pub name: Option<String>,
    pub public_email: Option<String>,
    pub access_level: u64,
    pub created_at: Option<String>,
    /// `YYYY-MM-DD`, as GitLab keeps it.
    pub expires_at: Option<String>,
}

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

impl Member {
    /// The member a `project_members` record names; `None` for a record
    /// without a user (an invitation by e-mail) or an access level.
    pub fn of_record(record: &[u8]) -> Option<Member> {
        let record: Value = serde_json::from_slice(record).ok()?;
        let user = record.get("user")?;
        Some(Member {
            user_id: user
                .get("id")
                .and_then(Value::as_u64)
                .or_else(|| record.get("user_id").and_then(Value::as_u64))?,
            username: text(user.get("username"))?,
            name: text(user.get("name")),
            public_email: text(user.get("public_email")),
            access_level: record.get("access_level").and_then(Value::as_u64)?,
            created_at: text(record.get("created_at")),
            expires_at: text(record.get("expires_at")),
        })
    }

    /// The member a members API answer (GitLab's `Member` entity) names.
    pub fn of_api(member: &Value) -> Option<Member> {
        Some(Member {
            user_id: member.get("id").and_then(Value::as_u64)?,
            username: text(member.get("username"))?,
            name: text(member.get("name")),
            public_email: text(member.get("public_email")),
            access_level: member.get("access_level").and_then(Value::as_u64)?,
            created_at: text(member.get("created_at")),
            expires_at: text(member.get("expires_at")),
        })
    }

    /// The `project_members` record of this member as GitLab's export
    /// writes one, numbered `id`.
    pub fn to_record(&self, id: u64) -> Value {
        let mut user = Map::new();
        user.insert("id".into(), json!(self.user_id));
        user.insert("public_email".into(), json!(self.public_email));
        user.insert("username".into(), json!(self.username));
        json!({
            "id": id,
            "access_level": self.access_level,
            "source_type": "Project",
            "user_id": self.user_id,
            "notification_level": 3,
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "created_by_id": null,
            "invite_email": null,
            "invite_token": null,
            "invite_accepted_at": null,
            "requested_at": null,
            "expires_at": self.expires_at,
            "user": user,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_and_an_api_answer_name_the_same_member() {
        let record = br#"{"id":36,"access_level":40,"source_id":5,"source_type":"Project","user_id":16,"created_at":"2016-06-14T15:02:03.834Z","expires_at":"2030-01-31","user":{"id":16,"public_email":"b@example.com","username":"bernard"}}"#;
        let member = Member::of_record(record).unwrap();
        assert_eq!(member.user_id, 16);
        assert_eq!(member.username, "bernard");
        assert_eq!(member.access_level, 40);
        assert_eq!(member.expires_at.as_deref(), Some("2030-01-31"));
        let again = Member::of_record(member.to_record(1).to_string().as_bytes()).unwrap();
        assert_eq!(again, member);
        let api = json!({"id": 16, "username": "bernard", "access_level": 40,
            "public_email": "b@example.com", "created_at": "2016-06-14T15:02:03.834Z",
            "expires_at": "2030-01-31"});
        assert_eq!(Member::of_api(&api), Some(member));
    }

    #[test]
    fn an_invitation_or_a_broken_record_is_no_member() {
        assert_eq!(
            Member::of_record(br#"{"access_level":30,"invite_email":"x@y"}"#),
            None
        );
        assert_eq!(Member::of_record(b"[1]"), None);
        assert_eq!(Member::of_api(&json!({"id": 1})), None);
    }
}
