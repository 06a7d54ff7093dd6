//! The skeleton the four provider front-ends share, so each one writes only what its
//! provider does differently: the router frame (fault layer, request counting, the
//! provider's own 404, shared state), the admit-then-answer flow of a data request (lock
//! the world, authenticate and charge quota, answer, add the headers every answer
//! carries), and cutting one page from a walk.

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::server::fault_gate;
use super::state::{PlatformState, Shared};
use super::wire::Params;

/// What one provider's front-end supplies to the shared skeleton.
pub(crate) trait FrontEnd {
    /// A refusal before the handler's own logic, in the provider's error shape.
    type Refusal: IntoResponse;
    /// What admission yields: the account, and whatever every answer must echo.
    type Admitted;

    /// The provider's answer to a path it does not serve.
    fn not_found() -> Response;

    /// Authenticate a data request (and charge its quota, where the provider has one).
    fn admit(
        shared: &Shared,
        state: &mut PlatformState,
        ask: &Ask<'_>,
    ) -> Result<Self::Admitted, Self::Refusal>;

    /// Headers every admitted answer carries (rate limits, request ids); none by default.
    fn decorate(_response: &mut Response, _admitted: &Self::Admitted) {}
}

/// The parts of a data request admission looks at.
pub(crate) struct Ask<'a> {
    pub(crate) headers: &'a HeaderMap,
    pub(crate) params: &'a Params,
    /// The account the path names, where it names one (Sinch's project).
    pub(crate) scope: Option<&'a str>,
}

/// `routes` behind the fault layer, with the provider's 404 and the shared state.
pub(crate) fn router<F: FrontEnd>(shared: Arc<Shared>, routes: Router<Arc<Shared>>) -> Router {
    routes
        .fallback(|| async { F::not_found() })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            fault_gate,
        ))
        .with_state(shared)
}

/// One data request: parse its query, lock the world, admit, `answer`, decorate. A
/// refusal is answered in the provider's shape without reaching `answer`.
pub(crate) fn answer<F: FrontEnd, R: IntoResponse>(
    shared: &Shared,
    headers: &HeaderMap,
    query: Option<&str>,
    scope: Option<&str>,
    answer: impl FnOnce(&mut PlatformState, &F::Admitted, &Params) -> R,
) -> Response {
    let params = Params::parse(query);
    let ask = Ask {
        headers,
        params: &params,
        scope,
    };
    let mut state = shared.lock();
    let admitted = match F::admit(shared, &mut state, &ask) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let mut response = answer(&mut state, &admitted, &params).into_response();
    F::decorate(&mut response, &admitted);
    response
}

/// The first `size` rows of a walk, and whether more follow (one row more is read to
/// know, never the whole walk).
pub(crate) fn cut_page<T>(rows: impl Iterator<Item = T>, size: usize) -> (Vec<T>, bool) {
    let mut rows: Vec<T> = rows.take(size.saturating_add(1)).collect();
    let more = rows.len() > size;
    rows.truncate(size);
    (rows, more)
}

#[cfg(test)]
mod tests {
    use super::cut_page;

    #[test]
    fn a_page_knows_whether_more_follow() {
        assert_eq!(cut_page(1..=5, 3), (vec![1, 2, 3], true));
        assert_eq!(cut_page(1..=3, 3), (vec![1, 2, 3], false));
        assert_eq!(cut_page(std::iter::empty::<u8>(), 3), (vec![], false));
        assert_eq!(cut_page(0.., 0), (vec![], true));
    }
}
