//! The policy doctor (AWS): the console cannot read a customer's key policy, but the customer
//! can paste it. This compares what was pasted (the key policy, or the role's trust and
//! permission policies) with what this console needs for the region and access mode, and
//! names each missing or wrong statement, principal, action or condition, with the JSON to
//! add (taken from the policy the console renders, so the two never disagree). Nothing is
//! sent anywhere; it is a pure function.
//!
//! What it reads, as IAM does: `Statement` as one object or a list; `Action`, `Resource` and
//! principals as a string or a list; actions case-insensitive with `*` and `?` wildcards;
//! an explicit `Deny` wins over every `Allow`. What it cannot judge (`NotAction`,
//! `NotPrincipal`, conditions other than the ones it knows) it says so as a warning rather
//! than guessing.

use serde::Serialize;
use serde_json::Value;

use super::policy::{AccessMode, BACKUP_SID, EBS_SID, PolicyScope, aws_policies};

/// The longest document the doctor reads, in characters (AWS allows 32 KB for a key policy;
/// two documents of this length fit the console's 64 KiB request body).
pub const MAX_POLICY_CHARS: usize = 16_384;

/// What a customer pastes: the region (or `*`), the access mode, and the documents.
#[derive(Clone, Debug, Default)]
pub struct PolicyCheckInput {
    pub region: String,
    /// `key_policy` (default) or `role`.
    pub mode: Option<String>,
    /// The key policy, or (role mode) the role's trust policy.
    pub policy: String,
    /// Role mode: the role's permission policy.
    pub permission_policy: Option<String>,
}

/// Which pasted document a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Document {
    KeyPolicy,
    TrustPolicy,
    PermissionPolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The console cannot use the key (or the role) as pasted.
    Error,
    /// It works, but something is weaker or riskier than it should be, or could not be judged.
    Warning,
}

/// One thing wrong with a pasted policy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub document: Document,
    pub severity: Severity,
    /// A stable code: `invalid_json`, `no_statements`, `missing_statement`,
    /// `missing_action`, `wrong_principal`, `wrong_region`, `wrong_account`,
    /// `missing_condition`, `missing_external_id`, `wrong_external_id`, `deny_statement`,
    /// `wrong_resource`, `open_principal`, `unchecked`.
    pub problem: &'static str,
    /// The statement it is about (its `Sid`, or its position), when there is one.
    pub statement: Option<String>,
    /// What is wrong, in a sentence naming the values involved.
    pub detail: String,
    /// The JSON to add or to put in place of what is wrong.
    pub add: Option<Value>,
}

/// What the doctor says of the pasted policies.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnosis {
    /// No error: as far as a policy can tell, the console can use the key.
    pub ok: bool,
    pub findings: Vec<Finding>,
}

/// What the console needs, for one region (or every region) and mode.
pub struct Needs<'a> {
    pub mode: AccessMode,
    pub scope: &'a PolicyScope,
    pub platform_account: &'a str,
    /// The external id the role must require (the organization id).
    pub organization_id: &'a str,
}

/// The actions the platform's own statement must allow on the key (key policy mode), and
/// the role's permission policy (role mode).
const PLATFORM_ACTIONS: [&str; 5] = [
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:DescribeKey",
    "kms:GetKeyRotationStatus",
];
/// The actions the volumes' statement (through EC2) must allow.
const VOLUME_ACTIONS: [&str; 6] = [
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:CreateGrant",
    "kms:DescribeKey",
];

/// Diagnoses the pasted documents: `policy` is the key policy (key policy mode) or the role's
/// trust policy (role mode); `permission_policy` the role's permission policy.
pub fn diagnose(needs: &Needs<'_>, policy: &str, permission_policy: Option<&str>) -> Diagnosis {
    let mut findings = Vec::new();
    match needs.mode {
        AccessMode::KeyPolicy => {
            if let Some(statements) = parse(Document::KeyPolicy, policy, &mut findings) {
                key_policy(needs, &statements, &mut findings);
            }
        }
        AccessMode::Role => {
            if let Some(statements) = parse(Document::TrustPolicy, policy, &mut findings) {
                trust_policy(needs, &statements, &mut findings);
            }
            match permission_policy.filter(|p| !p.trim().is_empty()) {
                Some(text) => {
                    if let Some(statements) = parse(Document::PermissionPolicy, text, &mut findings)
                    {
                        permission(needs, &statements, &mut findings);
                    }
                }
                None => findings.push(Finding {
                    document: Document::PermissionPolicy,
                    severity: Severity::Warning,
                    problem: "unchecked",
                    statement: None,
                    detail: "The role's permission policy was not pasted, so it was not checked."
                        .into(),
                    add: None,
                }),
            }
        }
    }
    Diagnosis {
        ok: findings.iter().all(|f| f.severity != Severity::Error),
        findings,
    }
}

/// One statement, read the way IAM reads it.
struct Stmt {
    label: String,
    allow: bool,
    actions: Vec<String>,
    /// `NotAction`, `NotPrincipal` or `NotResource`: not judged.
    negated: bool,
    /// Principals as written (`*`, ARNs, account ids); empty when the statement has none
    /// (an identity policy).
    principals: Vec<String>,
    resources: Vec<String>,
    condition: Value,
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn principals(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Object(map)) => map.values().flat_map(|v| strings(Some(v))).collect(),
        _ => Vec::new(),
    }
}

fn parse(document: Document, text: &str, findings: &mut Vec<Finding>) -> Option<Vec<Stmt>> {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => {
            findings.push(Finding {
                document,
                severity: Severity::Error,
                problem: "invalid_json",
                statement: None,
                detail: format!(
                    "This is not valid JSON: {} (line {}, column {}).",
                    err,
                    err.line(),
                    err.column()
                ),
                add: None,
            });
            return None;
        }
    };
    let raw = match value.get("Statement") {
        Some(Value::Array(items)) => items.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => Vec::new(),
    };
    if raw.is_empty() {
        findings.push(Finding {
            document,
            severity: Severity::Error,
            problem: "no_statements",
            statement: None,
            detail: "The policy has no `Statement` (an object or a list of them).".into(),
            add: None,
        });
        return None;
    }
    Some(
        raw.iter()
            .enumerate()
            .map(|(i, s)| Stmt {
                label: s
                    .get("Sid")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("statement {}", i + 1)),
                allow: s.get("Effect").and_then(Value::as_str) == Some("Allow"),
                actions: strings(s.get("Action")),
                negated: s.get("NotAction").is_some()
                    || s.get("NotPrincipal").is_some()
                    || s.get("NotResource").is_some(),
                principals: principals(s.get("Principal")),
                resources: strings(s.get("Resource")),
                condition: s.get("Condition").cloned().unwrap_or(Value::Null),
            })
            .collect(),
    )
}

/// IAM's wildcard match for actions: `*` any run, `?` one character, case-insensitive.
fn glob(pattern: &str, text: &str) -> bool {
    glob_chars(&pattern.to_ascii_lowercase(), &text.to_ascii_lowercase())
}

/// The same for condition values under `StringLike`, which are case-sensitive.
fn glob_case(pattern: &str, text: &str) -> bool {
    glob_chars(pattern, text)
}

fn glob_chars(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Stmt {
    fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|a| glob(a, action))
    }

    /// Whether the statement names the platform's account as principal (its root, any
    /// identity in it, or its bare account id).
    fn names_account(&self, account: &str) -> bool {
        self.principals.iter().any(|p| {
            p == account
                || p.strip_prefix("arn:")
                    .and_then(|rest| rest.split(':').nth(3))
                    .is_some_and(|a| a == account)
        })
    }

    fn open_to_all(&self) -> bool {
        self.principals.iter().any(|p| p == "*")
    }

    /// A condition value under `operator` (any of them when `None`) for `key`.
    fn condition(&self, key: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        if let Value::Object(operators) = &self.condition {
            for (operator, keys) in operators {
                if let Value::Object(keys) = keys {
                    for (k, v) in keys {
                        if k.eq_ignore_ascii_case(key) {
                            for value in strings(Some(v)) {
                                found.push((operator.clone(), value));
                            }
                        }
                    }
                }
            }
        }
        found
    }
}

/// The rendered statement with this `Sid`, to quote as the fix.
fn rendered(needs: &Needs<'_>, document: usize, sid: &str) -> Option<Value> {
    let policies = aws_policies(
        needs.mode,
        needs.scope,
        needs.platform_account,
        needs.organization_id,
        None,
        None,
    );
    policies.documents.get(document).and_then(|d| {
        d.policy["Statement"]
            .as_array()?
            .iter()
            .find(|s| s["Sid"] == sid)
            .cloned()
    })
}

/// A condition operator that requires the value (not `StringNotEquals` & co., and not
/// `...IfExists`, which a request without the key also satisfies).
fn positive(operator: &str) -> bool {
    !operator.contains("Not") && !operator.ends_with("IfExists")
}

/// Whether `(operator, value)` lets the clusters' volumes reach the key through EC2 in the
/// scope: exact under `StringEquals`; a wildcard only counts under a `...Like` operator (under
/// `StringEquals`, `*` is a literal character); every region needs a pattern that matches
/// more than one.
fn via_service_ok(scope: &PolicyScope, operator: &str, value: &str) -> bool {
    if !positive(operator) {
        return false;
    }
    let like = operator.contains("Like");
    match scope {
        PolicyScope::Region(_) => {
            let expected = expected_via_service(scope);
            if like {
                glob_case(value, &expected)
            } else {
                value == expected
            }
        }
        PolicyScope::AllRegions => {
            like && ["us-east-1", "eu-west-1"]
                .iter()
                .all(|r| glob_case(value, &format!("ec2.{r}.amazonaws.com")))
        }
    }
}

/// Whether a condition requires exactly `expected` with an operator that grants on a match.
fn requires(values: &[(String, String)], expected: &str) -> bool {
    values
        .iter()
        .any(|(op, v)| positive(op) && !op.contains("Like") && v == expected)
        || values.iter().any(|(op, v)| {
            positive(op) && op.contains("Like") && glob_case(v, expected) && !v.contains(['*', '?'])
        })
}

fn expected_via_service(scope: &PolicyScope) -> String {
    match scope {
        PolicyScope::Region(r) => format!("ec2.{}.{}", r.as_str(), r.dns_suffix()),
        PolicyScope::AllRegions => "ec2.*.amazonaws.com".into(),
    }
}

/// Explicit denies win over every allow: any that could touch what the console needs.
fn denies(
    document: Document,
    statements: &[Stmt],
    needed: &[&str],
    account: &str,
    findings: &mut Vec<Finding>,
) {
    for s in statements.iter().filter(|s| !s.allow) {
        let hit: Vec<&str> = needed.iter().copied().filter(|a| s.allows(a)).collect();
        let reaches_us = s.principals.is_empty() || s.open_to_all() || s.names_account(account);
        if !hit.is_empty() && reaches_us {
            findings.push(Finding {
                document,
                // A conditional Deny (say, of requests without TLS) may never match the
                // console's calls: worth a look, not a verdict.
                severity: if s.condition.is_null() {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                problem: "deny_statement",
                statement: Some(s.label.clone()),
                detail: format!(
                    "\"{}\" denies {} to {}; an explicit Deny overrides every Allow, so the console \
                     would be refused{}. Remove it, or narrow its principal or condition so it does \
                     not match the platform's account {account}.",
                    s.label,
                    hit.join(", "),
                    if s.principals.is_empty() { "whoever the policy applies to".to_owned() } else { s.principals.join(", ") },
                    if s.condition.is_null() { "" } else { " whenever its condition holds" },
                ),
                add: None,
            });
        }
    }
}

fn key_policy(needs: &Needs<'_>, statements: &[Stmt], findings: &mut Vec<Finding>) {
    let account = needs.platform_account;
    let doc = Document::KeyPolicy;
    for s in statements.iter().filter(|s| s.negated) {
        findings.push(unchecked(doc, s));
    }
    // The platform's own statement: backups, tests and the monitor.
    let platform: Vec<&Stmt> = statements
        .iter()
        .filter(|s| s.allow && s.names_account(account))
        .collect();
    let missing: Vec<&str> = PLATFORM_ACTIONS
        .iter()
        .copied()
        .filter(|a| !platform.iter().any(|s| s.allows(a)))
        .collect();
    if platform.is_empty() {
        // The console's own statement, pasted with another principal.
        let misnamed: Vec<String> = statements
            .iter()
            .filter(|s| s.allow && s.label == BACKUP_SID)
            .flat_map(|s| s.principals.clone())
            .collect();
        findings.push(Finding {
            document: doc,
            severity: Severity::Error,
            problem: if misnamed.is_empty() { "missing_statement" } else { "wrong_principal" },
            statement: (!misnamed.is_empty()).then(|| BACKUP_SID.to_owned()),
            detail: if misnamed.is_empty() {
                format!("No statement allows the platform's account {account} to use the key for backups, tests and monitoring. Add this statement.")
            } else {
                format!("\"{BACKUP_SID}\" names {}, not the platform's account {account}: set its principal to arn:aws:iam::{account}:root.", misnamed.join(", "))
            },
            add: rendered(needs, 0, BACKUP_SID),
        });
    } else if !missing.is_empty() {
        findings.push(Finding {
            document: doc,
            severity: Severity::Error,
            problem: "missing_action",
            statement: Some(platform[0].label.clone()),
            detail: format!(
                "The platform's account {account} is not allowed {}: add {} to \"{}\" (or use the statement below).",
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" },
                platform[0].label
            ),
            add: rendered(needs, 0, BACKUP_SID),
        });
    }
    // The volumes' statement: through EC2, in the region, for the platform's account.
    let volumes: Vec<&Stmt> = statements
        .iter()
        .filter(|s| {
            s.allow
                && (s.open_to_all() || s.names_account(account))
                && VOLUME_ACTIONS.iter().any(|a| s.allows(a))
                && !s.condition("kms:ViaService").is_empty()
        })
        .collect();
    let expected = expected_via_service(needs.scope);
    match volumes.first() {
        None => findings.push(Finding {
            document: doc,
            severity: Severity::Error,
            problem: "missing_statement",
            statement: None,
            detail: format!(
                "No statement lets the cluster volumes use the key through EC2 ({expected}). Add this statement."
            ),
            add: rendered(needs, 0, EBS_SID),
        }),
        Some(s) => {
            let via = s.condition("kms:ViaService");
            if !via.iter().any(|(op, v)| via_service_ok(needs.scope, op, v)) {
                let literal = via
                    .iter()
                    .any(|(op, v)| !op.contains("Like") && v.contains(['*', '?']));
                let negated = via.iter().any(|(op, _)| !positive(op));
                findings.push(Finding {
                    document: doc,
                    severity: Severity::Error,
                    problem: "wrong_region",
                    statement: Some(s.label.clone()),
                    detail: format!(
                        "\"{}\" allows the key through {} but this key's clusters reach it through {expected}{}: set kms:ViaService to \"{expected}\"{}.",
                        s.label,
                        via.iter().map(|(op, v)| format!("{v} ({op})")).collect::<Vec<_>>().join(", "),
                        if literal { "; under StringEquals a `*` is a literal character" } else if negated { "; a Not operator refuses the value instead of requiring it" } else { "" },
                        if matches!(needs.scope, PolicyScope::AllRegions) { " under StringLike" } else { "" },
                    ),
                    add: rendered(needs, 0, EBS_SID),
                });
            }
            let missing: Vec<&str> = VOLUME_ACTIONS.iter().copied().filter(|a| !s.allows(a)).collect();
            if !missing.is_empty() {
                findings.push(Finding {
                    document: doc,
                    severity: Severity::Error,
                    problem: "missing_action",
                    statement: Some(s.label.clone()),
                    detail: format!("\"{}\" does not allow {}, which the cluster volumes need.", s.label, missing.join(", ")),
                    add: rendered(needs, 0, EBS_SID),
                });
            }
            let callers = s.condition("kms:CallerAccount");
            if callers.is_empty() {
                if s.open_to_all() {
                    findings.push(Finding {
                        document: doc,
                        severity: Severity::Error,
                        problem: "missing_condition",
                        statement: Some(s.label.clone()),
                        detail: format!(
                            "\"{}\" is open to every AWS principal and does not require kms:CallerAccount {account}: any account's EC2 could use your key. Add the condition.",
                            s.label
                        ),
                        add: rendered(needs, 0, EBS_SID),
                    });
                }
            } else if !requires(&callers, account) {
                findings.push(Finding {
                    document: doc,
                    severity: Severity::Error,
                    problem: "wrong_account",
                    statement: Some(s.label.clone()),
                    detail: format!(
                        "\"{}\" requires kms:CallerAccount {}, but it must require the platform's account {account} (with StringEquals).",
                        s.label,
                        callers.iter().map(|(op, v)| format!("{v} ({op})")).collect::<Vec<_>>().join(", ")
                    ),
                    add: rendered(needs, 0, EBS_SID),
                });
            }
        }
    }
    let mut needed: Vec<&str> = PLATFORM_ACTIONS.to_vec();
    needed.extend(VOLUME_ACTIONS);
    denies(doc, statements, &needed, account, findings);
}

fn trust_policy(needs: &Needs<'_>, statements: &[Stmt], findings: &mut Vec<Finding>) {
    let account = needs.platform_account;
    let doc = Document::TrustPolicy;
    let fix = || rendered(needs, 0, "AllowThePlatformToAssumeThisRole");
    let assume: Vec<&Stmt> = statements
        .iter()
        .filter(|s| s.allow && s.allows("sts:AssumeRole"))
        .collect();
    let Some(ours) = assume.iter().find(|s| s.names_account(account)) else {
        let named: Vec<String> = assume.iter().flat_map(|s| s.principals.clone()).collect();
        findings.push(Finding {
            document: doc,
            severity: Severity::Error,
            problem: if named.is_empty() { "missing_statement" } else { "wrong_principal" },
            statement: assume.first().map(|s| s.label.clone()),
            detail: if named.is_empty() {
                format!("No statement lets the platform's account {account} assume the role (sts:AssumeRole). Add this statement.")
            } else {
                format!("The role can be assumed by {}, not by the platform's account {account}.", named.join(", "))
            },
            add: fix(),
        });
        denies(doc, statements, &["sts:AssumeRole"], account, findings);
        return;
    };
    let ids = ours.condition("sts:ExternalId");
    if ids.is_empty() {
        findings.push(Finding {
            document: doc,
            severity: Severity::Error,
            problem: "missing_external_id",
            statement: Some(ours.label.clone()),
            detail: format!(
                "\"{}\" does not require sts:ExternalId {}: without it, any customer of the platform could have the console use your role (the confused deputy). Add the condition; the console presents your organization id.",
                ours.label, needs.organization_id
            ),
            add: fix(),
        });
    } else if !requires(&ids, needs.organization_id) {
        findings.push(Finding {
            document: doc,
            severity: Severity::Error,
            problem: "wrong_external_id",
            statement: Some(ours.label.clone()),
            detail: format!(
                "\"{}\" requires sts:ExternalId {}, but it must require (with StringEquals) your organization id {}, which the console presents.",
                ours.label,
                ids.iter().map(|(op, v)| format!("{v} ({op})")).collect::<Vec<_>>().join(", "),
                needs.organization_id
            ),
            add: fix(),
        });
    }
    denies(doc, statements, &["sts:AssumeRole"], account, findings);
}

fn permission(needs: &Needs<'_>, statements: &[Stmt], findings: &mut Vec<Finding>) {
    let doc = Document::PermissionPolicy;
    let fix = || rendered(needs, 1, "AllowUseOfTheCmekKey");
    for s in statements.iter().filter(|s| s.negated) {
        findings.push(unchecked(doc, s));
    }
    // Resources in the key's region (or every region, `*`).
    let in_region = |resource: &str| match needs.scope {
        PolicyScope::AllRegions => true,
        PolicyScope::Region(r) => {
            resource == "*"
                || resource
                    .split(':')
                    .nth(3)
                    .is_some_and(|region| glob(region, r.as_str()))
        }
    };
    let allowing: Vec<&Stmt> = statements
        .iter()
        .filter(|s| s.allow && PLATFORM_ACTIONS.iter().any(|a| s.allows(a)))
        .collect();
    let usable: Vec<&&Stmt> = allowing
        .iter()
        .filter(|s| s.resources.iter().any(|r| in_region(r)))
        .collect();
    if usable.is_empty() {
        let elsewhere: Vec<String> = allowing.iter().flat_map(|s| s.resources.clone()).collect();
        findings.push(Finding {
            document: doc,
            severity: Severity::Error,
            problem: if elsewhere.is_empty() { "missing_statement" } else { "wrong_resource" },
            statement: allowing.first().map(|s| s.label.clone()),
            detail: if elsewhere.is_empty() {
                "No statement allows the role to use KMS keys. Add this statement (narrow its Resource to your key's ARN).".into()
            } else {
                format!(
                    "The role may use {} only, none of which is in {}.",
                    elsewhere.join(", "),
                    match needs.scope { PolicyScope::Region(r) => r.as_str().to_owned(), PolicyScope::AllRegions => "any region".into() }
                )
            },
            add: fix(),
        });
    } else {
        let missing: Vec<&str> = PLATFORM_ACTIONS
            .iter()
            .copied()
            .filter(|a| !usable.iter().any(|s| s.allows(a)))
            .collect();
        if !missing.is_empty() {
            findings.push(Finding {
                document: doc,
                severity: Severity::Error,
                problem: "missing_action",
                statement: Some(usable[0].label.clone()),
                detail: format!(
                    "The role is not allowed {}: add {} to \"{}\".",
                    missing.join(", "),
                    if missing.len() == 1 { "it" } else { "them" },
                    usable[0].label
                ),
                add: fix(),
            });
        }
    }
    denies(
        doc,
        statements,
        &PLATFORM_ACTIONS,
        needs.platform_account,
        findings,
    );
}

fn unchecked(document: Document, s: &Stmt) -> Finding {
    Finding {
        document,
        severity: Severity::Warning,
        problem: "unchecked",
        statement: Some(s.label.clone()),
        detail: format!(
            "\"{}\" uses NotAction, NotPrincipal or NotResource, which the doctor does not judge: check by hand that it does not take away what the console needs.",
            s.label
        ),
        add: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::region::Region;
    use serde_json::json;

    const PLATFORM: &str = "380838443567";
    const ORG: &str = "4f9a1c52-7a7e-4a8e-9f7b-2b1c0f3d9e10";

    fn east() -> PolicyScope {
        PolicyScope::Region(Region::parse_known("region", "us-east-1").unwrap())
    }

    fn needs(mode: AccessMode, scope: &PolicyScope) -> Needs<'_> {
        Needs {
            mode,
            scope,
            platform_account: PLATFORM,
            organization_id: ORG,
        }
    }

    /// The policy the console renders, as JSON text, for editing.
    fn rendered_doc(mode: AccessMode, scope: &PolicyScope, index: usize) -> Value {
        aws_policies(mode, scope, PLATFORM, ORG, None, Some("111122223333")).documents[index]
            .policy
            .clone()
    }

    fn problems(d: &Diagnosis) -> Vec<&'static str> {
        d.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.problem)
            .collect()
    }

    fn key_policy_with(edit: impl FnOnce(&mut Value)) -> Diagnosis {
        let scope = east();
        let mut doc = rendered_doc(AccessMode::KeyPolicy, &scope, 0);
        edit(&mut doc);
        diagnose(
            &needs(AccessMode::KeyPolicy, &scope),
            &doc.to_string(),
            None,
        )
    }

    fn role_with(
        edit_trust: impl FnOnce(&mut Value),
        edit_permission: impl FnOnce(&mut Value),
    ) -> Diagnosis {
        let scope = east();
        let mut trust = rendered_doc(AccessMode::Role, &scope, 0);
        let mut permission = rendered_doc(AccessMode::Role, &scope, 1);
        edit_trust(&mut trust);
        edit_permission(&mut permission);
        diagnose(
            &needs(AccessMode::Role, &scope),
            &trust.to_string(),
            Some(&permission.to_string()),
        )
    }

    /// The statement with this Sid.
    fn sid<'a>(doc: &'a mut Value, sid: &str) -> &'a mut Value {
        doc["Statement"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|s| s["Sid"] == sid)
            .unwrap()
    }

    #[test]
    fn the_policies_the_console_renders_pass() {
        for scope in [east(), PolicyScope::AllRegions] {
            let key = rendered_doc(AccessMode::KeyPolicy, &scope, 0);
            let d = diagnose(
                &needs(AccessMode::KeyPolicy, &scope),
                &key.to_string(),
                None,
            );
            assert!(d.ok && d.findings.is_empty(), "{:?}", d.findings);
            let trust = rendered_doc(AccessMode::Role, &scope, 0);
            let permission = rendered_doc(AccessMode::Role, &scope, 1);
            let d = diagnose(
                &needs(AccessMode::Role, &scope),
                &trust.to_string(),
                Some(&permission.to_string()),
            );
            assert!(d.ok && d.findings.is_empty(), "{:?}", d.findings);
        }
    }

    #[test]
    fn invalid_json_says_where() {
        let d = diagnose(
            &needs(AccessMode::KeyPolicy, &east()),
            "{\"Statement\": [",
            None,
        );
        assert_eq!(problems(&d), ["invalid_json"]);
        assert!(d.findings[0].detail.contains("line 1"), "{:?}", d.findings);
        let d = diagnose(
            &needs(AccessMode::KeyPolicy, &east()),
            "{\"Version\": \"2012-10-17\"}",
            None,
        );
        assert_eq!(problems(&d), ["no_statements"]);
    }

    #[test]
    fn a_missing_platform_statement_is_named_with_the_statement_to_add() {
        let d = key_policy_with(|doc| {
            doc["Statement"]
                .as_array_mut()
                .unwrap()
                .retain(|s| s["Sid"] != BACKUP_SID);
        });
        assert_eq!(problems(&d), ["missing_statement"]);
        assert_eq!(d.findings[0].add.as_ref().unwrap()["Sid"], BACKUP_SID);
        assert!(!d.ok);
    }

    #[test]
    fn a_missing_action_is_named() {
        let d = key_policy_with(|doc| {
            sid(doc, BACKUP_SID)["Action"] =
                json!(["kms:Decrypt", "kms:DescribeKey", "kms:GetKeyRotationStatus"]);
        });
        assert_eq!(problems(&d), ["missing_action"]);
        let detail = &d.findings[0].detail;
        assert!(
            detail.contains("kms:Encrypt") && detail.contains("kms:GenerateDataKey"),
            "{detail}"
        );
        // A wildcard covers them.
        let d = key_policy_with(|doc| sid(doc, BACKUP_SID)["Action"] = json!("KMS:*"));
        assert!(d.ok, "{:?}", d.findings);
    }

    #[test]
    fn the_wrong_region_in_via_service_is_named() {
        let d = key_policy_with(|doc| {
            sid(doc, EBS_SID)["Condition"]["StringEquals"]["kms:ViaService"] =
                json!("ec2.us-west-2.amazonaws.com");
        });
        assert_eq!(problems(&d), ["wrong_region"]);
        assert!(d.findings[0].detail.contains("ec2.us-east-1.amazonaws.com"));
        assert!(d.findings[0].detail.contains("ec2.us-west-2.amazonaws.com"));
    }

    #[test]
    fn the_wrong_caller_account_and_the_wrong_principal_are_named() {
        let d = key_policy_with(|doc| {
            sid(doc, EBS_SID)["Condition"]["StringEquals"]["kms:CallerAccount"] =
                json!("999999999999");
        });
        assert_eq!(problems(&d), ["wrong_account"]);
        assert!(
            d.findings[0].detail.contains("999999999999")
                && d.findings[0].detail.contains(PLATFORM)
        );
        let d = key_policy_with(|doc| {
            sid(doc, BACKUP_SID)["Principal"]["AWS"] = json!("arn:aws:iam::999999999999:root");
        });
        assert_eq!(problems(&d), ["wrong_principal"]);
    }

    #[test]
    fn an_open_statement_without_caller_account_is_refused() {
        let d = key_policy_with(|doc| {
            sid(doc, EBS_SID)["Condition"]["StringEquals"]
                .as_object_mut()
                .unwrap()
                .remove("kms:CallerAccount");
        });
        assert_eq!(problems(&d), ["missing_condition"]);
    }

    #[test]
    fn a_deny_statement_wins_and_is_named() {
        let d = key_policy_with(|doc| {
            doc["Statement"].as_array_mut().unwrap().push(json!({
                "Sid": "NoDecrypt", "Effect": "Deny", "Principal": {"AWS": "*"},
                "Action": "kms:Decrypt", "Resource": "*"
            }));
        });
        assert_eq!(problems(&d), ["deny_statement"]);
        assert_eq!(d.findings[0].statement.as_deref(), Some("NoDecrypt"));
        // A conditional deny (no TLS) is worth a look, not a failure.
        let d = key_policy_with(|doc| {
            doc["Statement"].as_array_mut().unwrap().push(json!({
                "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}
            }));
        });
        assert!(d.ok, "{:?}", d.findings);
        assert_eq!(d.findings[0].severity, Severity::Warning);
    }

    #[test]
    fn role_mode_requires_the_external_id_and_the_platform_account() {
        let d = role_with(
            |t| {
                t["Statement"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("Condition");
            },
            |_| {},
        );
        assert_eq!(problems(&d), ["missing_external_id"]);
        let d = role_with(
            |t| {
                t["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] =
                    json!("another-org")
            },
            |_| {},
        );
        assert_eq!(problems(&d), ["wrong_external_id"]);
        assert!(d.findings[0].detail.contains(ORG));
        let d = role_with(
            |t| t["Statement"][0]["Principal"]["AWS"] = json!("arn:aws:iam::999999999999:root"),
            |_| {},
        );
        assert_eq!(problems(&d), ["wrong_principal"]);
    }

    #[test]
    fn role_mode_names_missing_permissions_and_keys_of_another_region() {
        let d = role_with(
            |_| {},
            |p| p["Statement"][0]["Action"] = json!(["kms:Decrypt", "kms:DescribeKey"]),
        );
        assert_eq!(problems(&d), ["missing_action"]);
        assert!(d.findings[0].detail.contains("kms:Encrypt"));
        let d = role_with(
            |_| {},
            |p| p["Statement"][0]["Resource"] = json!("arn:aws:kms:eu-west-1:111122223333:key/*"),
        );
        assert_eq!(problems(&d), ["wrong_resource"]);
        let d = role_with(
            |_| {},
            |p| {
                p["Statement"][0]["Resource"] = json!(
                    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
                )
            },
        );
        assert!(d.ok, "the key's own ARN: {:?}", d.findings);
    }

    #[test]
    fn a_single_statement_object_and_string_principals_are_read() {
        let scope = east();
        let trust = json!({
            "Version": "2012-10-17",
            "Statement": {
                "Effect": "Allow", "Principal": {"AWS": PLATFORM}, "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": ORG}}
            }
        });
        let permission = rendered_doc(AccessMode::Role, &scope, 1);
        let d = diagnose(
            &needs(AccessMode::Role, &scope),
            &trust.to_string(),
            Some(&permission.to_string()),
        );
        assert!(d.ok && d.findings.is_empty(), "{:?}", d.findings);
    }

    #[test]
    fn condition_operators_count_as_iam_counts_them() {
        // A wildcard under StringEquals is a literal `*`.
        let d = key_policy_with(|doc| {
            sid(doc, EBS_SID)["Condition"]["StringEquals"]["kms:ViaService"] =
                json!("ec2.*.amazonaws.com");
        });
        assert_eq!(problems(&d), ["wrong_region"]);
        assert!(d.findings[0].detail.contains("literal"), "{:?}", d.findings);
        // A Not operator refuses instead of requiring.
        let d = role_with(
            |t| {
                let c = t["Statement"][0]["Condition"].as_object_mut().unwrap();
                let value = c.remove("StringEquals").unwrap();
                c.insert("StringNotEquals".into(), value);
            },
            |_| {},
        );
        assert_eq!(problems(&d), ["wrong_external_id"]);
        // One region's ViaService does not serve a policy meant for every region.
        let every = PolicyScope::AllRegions;
        let mut doc = rendered_doc(AccessMode::KeyPolicy, &east(), 0);
        sid(&mut doc, EBS_SID)["Condition"]["StringEquals"]["kms:CallerAccount"] = json!(PLATFORM);
        let d = diagnose(
            &needs(AccessMode::KeyPolicy, &every),
            &doc.to_string(),
            None,
        );
        assert_eq!(problems(&d), ["wrong_region"]);
    }

    #[test]
    fn wildcards_match_as_iam_matches_them() {
        assert!(glob(
            "kms:GenerateDataKey*",
            "kms:GenerateDataKeyWithoutPlaintext"
        ));
        assert!(glob("kms:*", "KMS:Decrypt"));
        assert!(glob("kms:?ecrypt", "kms:Decrypt"));
        assert!(!glob("kms:Describe*", "kms:Decrypt"));
        assert!(glob("ec2.*.amazonaws.com", "ec2.us-east-1.amazonaws.com"));
    }
}
