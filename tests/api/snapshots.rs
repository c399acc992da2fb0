//! What clients see, as reviewed snapshots (insta): the OpenAPI document and the policy JSON
//! customers paste. A change to either shows up as a diff in review, never as an accident of
//! renaming a domain field. Update with `INSTA_UPDATE=always cargo test --test api snapshots`
//! and review the `.snap` files like code.

use cmek_console::domain::keys::policy::{AccessMode, PolicyScope, aws_policies};
use cmek_console::domain::keys::region::Region;
use cmek_console::http::api::openapi;

#[test]
fn the_openapi_document() {
    insta::assert_json_snapshot!("openapi", openapi::document());
}

#[test]
fn the_key_policy_for_one_region() {
    let region = Region::parse("region", "eu-central-1").unwrap();
    let policies = aws_policies(
        AccessMode::KeyPolicy,
        &PolicyScope::Region(region),
        "123456789012",
        "0199aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee",
        None,
        Some("210987654321"),
    );
    insta::assert_json_snapshot!("key_policy_eu_central_1", policies);
}

#[test]
fn the_role_policies_for_every_region() {
    let policies = aws_policies(
        AccessMode::Role,
        &PolicyScope::AllRegions,
        "123456789012",
        "0199aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee",
        None,
        Some("210987654321"),
    );
    insta::assert_json_snapshot!("role_policies_all_regions", policies);
}
