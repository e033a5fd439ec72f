//! The OpenAPI document served at `/openapi.json`.

mod contract;

use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use serde_json::Value;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::schema::ObjectBuilder;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi};

use super::{cache, events, health, locks, problem, ratelimit, sessions, tokens};

/// Every route of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "BlinkChamber", description = "Redis-backed platform runtime: HTTP API"),
    paths(
        health::healthz,
        health::readyz,
        health::status,
        health::diagnostics,
        locks::acquire,
        locks::extend,
        locks::release,
        ratelimit::check,
        ratelimit::rules,
        ratelimit::top,
        cache::stats,
        cache::get,
        cache::put,
        cache::delete,
        cache::invalidate,
        events::publish,
        events::stats,
        events::dead_letters,
        events::replay_matching,
        events::replay,
        events::show_dead,
        events::delete_dead,
        events::purge,
        events::ingest_zitadel,
        sessions::create,
        sessions::get,
        sessions::touch,
        sessions::update,
        sessions::rotate,
        sessions::delete,
        sessions::list,
        sessions::revoke_user,
        sessions::revoke,
        tokens::introspect,
        tokens::revoke,
        tokens::verify,
    ),
    components(schemas(
        problem::Problem,
        health::Health,
        health::Status,
        health::Counters,
        crate::doctor::Report,
        crate::doctor::Check,
        crate::doctor::Status,
        crate::doctor::Group,
        locks::AcquireRequest,
        locks::ExtendRequest,
        locks::ReleaseRequest,
        locks::LeaseBody,
        ratelimit::CheckRequest,
        ratelimit::DescriptorCheck,
        ratelimit::KeyForm,
        ratelimit::CheckResponse,
        ratelimit::DescriptorResult,
        ratelimit::Rules,
        ratelimit::RuleView,
        ratelimit::Top,
        ratelimit::LimitedKey,
        cache::CacheStats,
        cache::NamespaceStats,
        cache::PutRequest,
        cache::Tag,
        cache::ValueBody,
        cache::InvalidateRequest,
        cache::InvalidateResponse,
        events::Accepted,
        events::PublishBody,
        events::DeadLetterBody,
        events::Purged,
        events::FilterQuery,
        events::Replayed,
        crate::server::extract::ApiDuration,
        crate::events::Stats,
        crate::events::QueueStats,
        crate::events::queues::ConsumerLease,
        crate::events::queues::Totals,
        sessions::CreateRequest,
        crate::session::SessionKind,
        sessions::UpdateRequest,
        sessions::SessionBody,
        sessions::SessionList,
        sessions::ListedSession,
        sessions::Revoked,
        tokens::TokenRequest,
        tokens::Verified,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// A schema written as JSON Schema, for request and answer shapes the derive cannot say
/// (`oneOf` between two bodies, pattern properties, a value of any JSON type). It travels
/// through utoipa as a placeholder carrying the JSON, which [`contract::finish`] puts in
/// its place.
pub fn json_schema(schema: Value) -> RefOr<Schema> {
    ObjectBuilder::new()
        .extensions(Some(
            ExtensionsBuilder::new()
                .add(contract::RAW_SCHEMA, schema)
                .build(),
        ))
        .into()
}

/// The document as served: [`ApiDoc`] finished by [`contract::finish`] (the answers every
/// route shares, problem content types, links). Built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document is JSON");
        contract::finish(&mut doc);
        doc
    })
}
