//! The OpenAPI document served at `/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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
        cache::get,
        cache::put,
        cache::delete,
        cache::invalidate,
        events::publish,
        events::stats,
        events::dead_letters,
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
        cache::PutRequest,
        cache::InvalidateRequest,
        cache::InvalidateResponse,
        events::Accepted,
        crate::events::Stats,
        crate::events::QueueStats,
        sessions::CreateRequest,
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

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
