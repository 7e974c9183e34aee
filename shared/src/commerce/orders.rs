//! Packages and orders: `GET /v1/credits/packages`, `POST /v1/credits/orders` (a pending order
//! whose amount the server sets), the order's payment ([`fulfil`]: the order paid and its credits
//! granted in one transaction, keyed by the provider's payment, whatever arrives twice) and its
//! refunds ([`take_back`]: the credits the refunded share bought, never more than the balance).

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::Package;
use crate::credits::{Links, Movement, kinds};
use crate::cursor::Paging;
use crate::db::{get_i64, get_s, n, s};
use crate::error::{ApiError, FieldError};
use crate::http::{Caller, json, json_body, path_param, query_param};
use crate::keys;
use crate::state::State;
use crate::users::timestamp;

/// How long an order waits for its payment.
pub const PAY_WITHIN: Duration = Duration::minutes(30);

/// Who takes the payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Toss Payments: the client opens Toss's payment window, then confirms here.
    Toss,
    /// Stripe Checkout: the client opens `checkout_url`; Stripe's webhook pays the order.
    Stripe,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Toss => "toss",
            Self::Stripe => "stripe",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "toss" => Some(Self::Toss),
            "stripe" => Some(Self::Stripe),
            _ => None,
        }
    }
}

/// One package in one currency.
#[derive(Serialize, ToSchema)]
pub struct PackagePrice {
    pub id: String,
    pub credits: i64,
    /// In the currency's smallest unit: `10000` KRW is ₩10,000; `999` USD is $9.99.
    pub price: i64,
    /// ISO 4217.
    pub currency: String,
    /// Who can take the payment in this currency (Toss takes KRW only).
    pub providers: Vec<Provider>,
}

/// `GET /v1/credits/packages`.
#[derive(Serialize, ToSchema)]
pub struct PackageList {
    pub items: Vec<PackagePrice>,
}

/// The credit packages on sale, by currency; `?currency=KRW` keeps one.
#[utoipa::path(get, path = "/v1/credits/packages", tag = "payments",
    params(("currency" = Option<String>, Query, description = "ISO 4217, such as KRW or USD")),
    responses((status = 200, body = PackageList)))]
pub async fn list_credit_packages(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let currency = query_param(&req, "currency").map(|c| c.trim().to_ascii_uppercase());
    let items = state
        .config
        .payments
        .packages
        .iter()
        .flat_map(|package| {
            package.prices.iter().map(|(code, price)| PackagePrice {
                id: package.id.clone(),
                credits: package.credits,
                price: *price,
                currency: code.clone(),
                providers: providers_for(code),
            })
        })
        .filter(|p| currency.as_ref().is_none_or(|c| *c == p.currency))
        .collect();
    json(StatusCode::OK, &PackageList { items })
}

fn providers_for(currency: &str) -> Vec<Provider> {
    if currency == "KRW" {
        vec![Provider::Toss, Provider::Stripe]
    } else {
        vec![Provider::Stripe]
    }
}

/// `POST /v1/credits/orders`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// A package of `GET /v1/credits/packages`.
    pub package_id: String,
    /// `toss` or `stripe`; by default Toss for KRW, else Stripe.
    pub provider: Option<Provider>,
    /// ISO 4217; by default KRW for Toss, else USD.
    pub currency: Option<String>,
}

/// An order of credits.
#[derive(Serialize, ToSchema)]
pub struct Order {
    pub id: String,
    pub package_id: String,
    pub credits: i64,
    /// What the buyer pays, in the currency's smallest unit; set by the server.
    pub amount: i64,
    pub currency: String,
    pub provider: Provider,
    /// `pending`, `expired` (never paid), `paid`, `partially_refunded` or `refunded`.
    pub status: String,
    /// The payment window's `orderName`.
    pub order_name: String,
    /// Toss's `customerKey` for this buyer.
    pub customer_key: Option<String>,
    /// Stripe Checkout's page for this order.
    pub checkout_url: Option<String>,
    /// Pay before this, or the order expires.
    pub pay_by: String,
    pub created_at: String,
    pub paid_at: Option<String>,
    /// What the provider gave back so far.
    pub refunded_amount: i64,
    /// Credits taken back for it.
    pub credits_taken_back: i64,
    /// Credits the refund should have taken back but the buyer had spent (the balance never
    /// goes below zero): for an admin to settle.
    pub unrecovered_credits: i64,
}

/// A page of orders.
#[derive(Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<Order>,
    pub next_cursor: Option<String>,
}

/// An order as stored.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Stored {
    pub id: String,
    pub user_id: String,
    pub package_id: String,
    pub credits: i64,
    pub amount: i64,
    pub currency: String,
    pub provider: String,
    pub status: String,
    pub order_name: String,
    pub checkout_url: Option<String>,
    pub session_id: Option<String>,
    pub payment_id: Option<String>,
    pub pay_by: i64,
    pub created_at: String,
    pub paid_at: Option<String>,
    #[serde(default)]
    pub refunded_amount: i64,
    #[serde(default)]
    pub credits_taken_back: i64,
    #[serde(default)]
    pub unrecovered_credits: i64,
}

impl Stored {
    pub(crate) fn provider(&self) -> Option<Provider> {
        Provider::parse(&self.provider)
    }

    pub(crate) fn expired(&self, now: DateTime<Utc>) -> bool {
        self.status == "pending" && now.timestamp() > self.pay_by
    }

    pub(crate) fn into_view(self, now: DateTime<Utc>) -> Order {
        let status = if self.expired(now) {
            "expired".to_owned()
        } else {
            self.status.clone()
        };
        let provider = self.provider().unwrap_or(Provider::Stripe);
        Order {
            customer_key: (provider == Provider::Toss).then(|| customer_key(&self.user_id)),
            pay_by: DateTime::from_timestamp(self.pay_by, 0)
                .map(timestamp)
                .unwrap_or_default(),
            id: self.id,
            package_id: self.package_id,
            credits: self.credits,
            amount: self.amount,
            currency: self.currency,
            provider,
            status,
            order_name: self.order_name,
            checkout_url: self.checkout_url,
            created_at: self.created_at,
            paid_at: self.paid_at,
            refunded_amount: self.refunded_amount,
            credits_taken_back: self.credits_taken_back,
            unrecovered_credits: self.unrecovered_credits,
        }
    }
}

/// Toss's `customerKey`: stable per buyer, not their id (Toss asks for an unguessable value).
fn customer_key(user_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("lambent-toss-customer|{user_id}").as_bytes());
    format!("ck_{}", &hex::encode(digest)[..32])
}

/// Reads an order (strongly consistent).
pub(crate) async fn load(state: &State, order_id: &str) -> anyhow::Result<Option<Stored>> {
    if uuid::Uuid::parse_str(order_id).is_err() {
        return Ok(None);
    }
    let Some(item) = state.db.get(&keys::order(order_id), keys::ORDER).await? else {
        return Ok(None);
    };
    Ok(Some(
        serde_dynamo::from_item(item).context("an order item")?,
    ))
}

/// The caller's order, or 404 (someone else's too).
async fn owned(state: &State, req: &Request) -> Result<(Caller, Stored), ApiError> {
    let caller = Caller::from_request(req)?;
    let id = path_param(req, "id").unwrap_or_default();
    match load(state, &id).await? {
        Some(order) if order.user_id == caller.user_id => Ok((caller, order)),
        _ => Err(ApiError::NotFound("no such order")),
    }
}

fn choose(body: &CreateOrder, package: &Package) -> Result<(Provider, String, i64), ApiError> {
    let currency = body
        .currency
        .as_deref()
        .map(|c| c.trim().to_ascii_uppercase());
    let provider = match (body.provider, currency.as_deref()) {
        (Some(p), _) => p,
        (None, None | Some("KRW")) => Provider::Toss,
        (None, Some(_)) => Provider::Stripe,
    };
    let currency = currency.unwrap_or_else(|| match provider {
        Provider::Toss => "KRW".to_owned(),
        Provider::Stripe => "USD".to_owned(),
    });
    if provider == Provider::Toss && currency != "KRW" {
        return Err(ApiError::invalid(
            "currency",
            "Toss Payments takes KRW only",
        ));
    }
    let Some(price) = package.prices.get(&currency) else {
        return Err(ApiError::invalid(
            "currency",
            format!(
                "{} is sold in {}",
                package.id,
                package
                    .prices
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    Ok((provider, currency, *price))
}

/// Starts buying a package: a pending order whose amount the server sets, payable for 30
/// minutes. Toss: open the payment window with the answer's `id` as `orderId`, `amount`,
/// `order_name` and `customer_key`, then confirm. Stripe: open `checkout_url`.
#[utoipa::path(post, path = "/v1/credits/orders", tag = "payments", security(("bearer" = [])), request_body = CreateOrder,
    responses((status = 201, body = Order), (status = 404, description = "this deployment sells no credits", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 503, description = "Stripe did not answer", body = crate::error::Problem)))]
pub async fn create_credit_order(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let body: CreateOrder = json_body(&req, &["application/json"])?;
    let Some(package) = state.config.payments.package(&body.package_id) else {
        let ids: Vec<&str> = state
            .config
            .payments
            .packages
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        return Err(ApiError::Validation(vec![FieldError::new(
            "package_id",
            format!("must be one of {}", ids.join(", ")),
        )]));
    };
    let (provider, currency, amount) = choose(&body, package)?;
    let payment_keys = crate::commerce::keys(state).await?;
    state
        .db
        .get(&keys::user(&caller.user_id), keys::PROFILE)
        .await?
        .filter(|p| !p.contains_key("deleted_at"))
        .ok_or(ApiError::NotFound("the account no longer exists"))?;
    let offered = match provider {
        Provider::Toss => payment_keys.toss().is_some(),
        Provider::Stripe => {
            payment_keys.stripe().is_some() && payment_keys.stripe_webhook().is_some()
        }
    };
    if !offered {
        return Err(ApiError::invalid(
            "provider",
            format!("{} is not offered by this deployment", provider.as_str()),
        ));
    }
    let now = Utc::now();
    let id = uuid::Uuid::now_v7().to_string();
    let pay_by = (now + PAY_WITHIN).timestamp();
    let order = Stored {
        id: id.clone(),
        user_id: caller.user_id.clone(),
        package_id: package.id.clone(),
        credits: package.credits,
        amount,
        currency,
        provider: provider.as_str().to_owned(),
        status: "pending".to_owned(),
        order_name: format!("{} credits", package.credits),
        checkout_url: None,
        session_id: None,
        payment_id: None,
        pay_by,
        created_at: timestamp(now),
        paid_at: None,
        refunded_amount: 0,
        credits_taken_back: 0,
        unrecovered_credits: 0,
    };
    state
        .db
        .put(
            vec![
                ("pk", s(keys::order(&id))),
                ("sk", s(keys::ORDER)),
                ("id", s(&id)),
                ("user_id", s(&caller.user_id)),
                ("package_id", s(&order.package_id)),
                ("credits", n(order.credits)),
                ("amount", n(amount)),
                ("currency", s(&order.currency)),
                ("provider", s(provider.as_str())),
                ("status", s("pending")),
                ("order_name", s(&order.order_name)),
                ("pay_by", n(pay_by)),
                ("created_at", s(&order.created_at)),
                ("refunded_amount", n(0)),
                ("credits_taken_back", n(0)),
                ("unrecovered_credits", n(0)),
                ("gsi1pk", s(keys::orders_of(&caller.user_id))),
                ("gsi1sk", s(&id)),
                ("gsi3pk", s(keys::orders_in("pending"))),
                ("gsi3sk", n(now.timestamp_millis())),
                // An order never paid goes a day after it expired; a paid one stays.
                ("expires_at", n(pay_by + 86_400)),
            ],
            "creating an order",
        )
        .await?;
    let mut order = order;
    if provider == Provider::Stripe {
        let session = crate::commerce::stripe::create_session(state, &order).await?;
        state
            .db
            .client
            .update_item()
            .table_name(&state.db.table)
            .key("pk", s(keys::order(&id)))
            .key("sk", s(keys::ORDER))
            .update_expression("SET session_id = :session, checkout_url = :url")
            .expression_attribute_values(":session", s(&session.id))
            .expression_attribute_values(":url", s(&session.url))
            .send()
            .await
            .context("recording the checkout session")?;
        order.session_id = Some(session.id);
        order.checkout_url = Some(session.url);
    }
    tracing::info!(order_id = %id, provider = provider.as_str(), amount, currency = %order.currency, "order created");
    let mut response = json(StatusCode::CREATED, &order.into_view(now))?;
    if let Ok(location) = format!("/v1/credits/orders/{id}").parse() {
        response.headers_mut().insert("location", location);
    }
    Ok(response)
}

/// One of your orders.
#[utoipa::path(get, path = "/v1/credits/orders/{id}", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Order), (status = 404, body = crate::error::Problem)))]
pub async fn get_credit_order(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let (_, order) = owned(state, &req).await?;
    json(StatusCode::OK, &order.into_view(Utc::now()))
}

/// Your orders, newest first.
#[utoipa::path(get, path = "/v1/credits/orders", tag = "payments", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = OrderPage), (status = 400, description = "invalid_cursor", body = crate::error::Problem)))]
pub async fn list_credit_orders(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let scope = format!("orders|{}", caller.user_id);
    let page = Paging::from_request(&req, state.cursor_key().await?, scope)?;
    let pk = keys::orders_of(&caller.user_id);
    let start = page
        .after
        .as_ref()
        .map(|id| crate::db::index_key("gsi1", &pk, s(id), (&keys::order(id), keys::ORDER)));
    let out = state
        .db
        .index_page("gsi1", &pk, start, page.limit, true)
        .await?;
    let now = Utc::now();
    let items = out
        .items()
        .iter()
        .filter_map(|item| serde_dynamo::from_item::<_, Stored>(item.clone()).ok())
        .map(|order| order.into_view(now))
        .collect();
    let next = page.next_cursor(
        out.last_evaluated_key()
            .and_then(|k| get_s(k, "gsi1sk"))
            .map(str::to_owned),
    );
    json(
        StatusCode::OK,
        &OrderPage {
            items,
            next_cursor: next,
        },
    )
}

/// A provider's word that it took a payment for an order.
#[derive(Debug)]
pub(crate) struct Paid<'a> {
    pub provider: Provider,
    /// Toss's `paymentKey`, Stripe's PaymentIntent.
    pub payment_id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    /// Stripe's Checkout Session, which must be the order's.
    pub session_id: Option<&'a str>,
}

/// What [`fulfil`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fulfilled {
    /// The order is paid and its credits granted, now.
    Credited,
    /// It was, before, by this payment.
    AlreadyPaid,
    /// Nothing changed: why (logged).
    Refused(&'static str),
}

/// Pays an order once: the order's `pending → paid`, its credits with a `purchase` line, and the
/// payment's record in one transaction. A second payment, a different amount or currency, or
/// another provider's word changes nothing.
pub(crate) async fn fulfil(
    state: &State,
    order_id: &str,
    paid: &Paid<'_>,
) -> anyhow::Result<Fulfilled> {
    let Some(order) = load(state, order_id).await? else {
        tracing::warn!(order_id, ?paid, "a payment for an unknown order");
        return Ok(Fulfilled::Refused("unknown order"));
    };
    let refusal = if order.provider() != Some(paid.provider) {
        Some("another provider's order")
    } else if order.amount != paid.amount {
        Some("the amount is not the order's")
    } else if !order.currency.eq_ignore_ascii_case(paid.currency) {
        Some("the currency is not the order's")
    } else if paid.session_id.is_some() && order.session_id.as_deref() != paid.session_id {
        Some("the checkout session is not the order's")
    } else {
        None
    };
    if let Some(reason) = refusal {
        tracing::error!(order_id, ?paid, expected_amount = order.amount, currency = %order.currency, reason, "a payment that does not match its order");
        return Ok(Fulfilled::Refused(reason));
    }
    if order.status != "pending" {
        return Ok(already(&order, paid));
    }
    let now = Utc::now();
    let now_text = timestamp(now);
    let mut actions = vec![crate::db::tx::update(
        &state.db,
        (&keys::order(order_id), keys::ORDER),
        "SET #status = :paid, payment_id = :payment, paid_at = :now, gsi3pk = :listed REMOVE expires_at",
        Some("#status = :pending"),
        &[("#status", "status")],
        vec![
            (":paid", s("paid")),
            (":pending", s("pending")),
            (":payment", s(paid.payment_id)),
            (":now", s(&now_text)),
            (":listed", s(keys::orders_in("paid"))),
        ],
    )?];
    actions.extend(
        Movement {
            user_id: &order.user_id,
            amount: order.credits,
            kind: kinds::PURCHASE,
            entry: order_id,
            links: Links {
                order_id: Some(order_id),
                ..Links::default()
            },
            note: Some(&order.package_id),
            by: None,
        }
        .actions(&state.db, now)?,
    );
    actions.push(crate::db::tx::put(
        &state.db,
        vec![
            (
                "pk",
                s(keys::payment(paid.provider.as_str(), paid.payment_id)),
            ),
            ("sk", s(keys::PAYMENT)),
            ("order_id", s(order_id)),
            ("user_id", s(&order.user_id)),
            ("created_at", s(&now_text)),
        ],
        Some("attribute_not_exists(pk)"),
    )?);
    match crate::db::transact(&state.db, actions).await {
        Ok(()) => {
            tracing::info!(order_id, user_id = %order.user_id, credits = order.credits, payment_id = paid.payment_id, "order paid");
            Ok(Fulfilled::Credited)
        }
        Err(err) => match crate::db::failed_conditions(&err) {
            Some(failed) if failed.get(1) == Some(&true) && failed.first() != Some(&true) => {
                tracing::error!(order_id, user_id = %order.user_id, payment_id = paid.payment_id, "a paid order of an account that no longer exists: refund it");
                Ok(Fulfilled::Refused("the account no longer exists"))
            }
            Some(_) => {
                let again = load(state, order_id).await?.context("the order went")?;
                Ok(already(&again, paid))
            }
            None => Err(anyhow::Error::new(err).context("paying an order")),
        },
    }
}

fn already(order: &Stored, paid: &Paid<'_>) -> Fulfilled {
    if order.payment_id.as_deref() == Some(paid.payment_id) {
        Fulfilled::AlreadyPaid
    } else {
        tracing::error!(order_id = %order.id, status = %order.status, payment_id = paid.payment_id, paid_by = ?order.payment_id, "a second payment for a paid order: refund it");
        Fulfilled::Refused("the order was paid by another payment")
    }
}

/// The order a provider's payment paid.
pub(crate) async fn paid_by(
    state: &State,
    provider: Provider,
    payment_id: &str,
) -> anyhow::Result<Option<String>> {
    Ok(state
        .db
        .get(&keys::payment(provider.as_str(), payment_id), keys::PAYMENT)
        .await?
        .and_then(|item| get_s(&item, "order_id").map(str::to_owned)))
}

/// Credits bought by `amount` of an order (the share, rounded down; all of them for the whole).
fn credits_for(order: &Stored, amount: i64) -> i64 {
    if amount >= order.amount {
        return order.credits;
    }
    i64::try_from(i128::from(order.credits) * i128::from(amount) / i128::from(order.amount))
        .unwrap_or(0)
}

/// Applies a refund: the provider has given back `refunded` of the order's amount in all (Toss's
/// `totalAmount - balanceAmount`, Stripe's `amount_refunded`). The credits that share bought
/// are taken back, as far as the balance goes: the balance never goes below zero, and what the
/// buyer had spent is recorded on the order (`unrecovered_credits`). Each refunded total
/// applies once; a smaller or equal one (a repeat, or late) changes nothing.
pub(crate) async fn take_back(
    state: &State,
    order_id: &str,
    provider: Provider,
    refunded: i64,
) -> anyhow::Result<()> {
    for _ in 0..5 {
        let Some(order) = load(state, order_id).await? else {
            tracing::warn!(order_id, "a refund for an unknown order");
            return Ok(());
        };
        if order.provider() != Some(provider)
            || !matches!(
                order.status.as_str(),
                "paid" | "partially_refunded" | "refunded"
            )
        {
            tracing::warn!(order_id, status = %order.status, "a refund for an order not paid here");
            return Ok(());
        }
        let refunded = refunded.min(order.amount);
        if refunded <= order.refunded_amount {
            return Ok(());
        }
        let due = credits_for(&order, refunded) - credits_for(&order, order.refunded_amount);
        let balance = state
            .db
            .get(&keys::user(&order.user_id), keys::PROFILE)
            .await?
            .filter(|p| !p.contains_key("deleted_at"))
            .and_then(|p| get_i64(&p, "credits"))
            .unwrap_or(0)
            .max(0);
        let take = due.min(balance);
        let status = if refunded >= order.amount {
            "refunded"
        } else {
            "partially_refunded"
        };
        let now = Utc::now();
        let mut actions = vec![crate::db::tx::update(
            &state.db,
            (&keys::order(order_id), keys::ORDER),
            "SET #status = :status, refunded_amount = :refunded, credits_taken_back = credits_taken_back + :take, unrecovered_credits = unrecovered_credits + :short, refunded_at = :now, gsi3pk = :listed",
            Some("refunded_amount = :before"),
            &[("#status", "status")],
            vec![
                (":status", s(status)),
                (":refunded", n(refunded)),
                (":take", n(take)),
                (":short", n(due - take)),
                (":before", n(order.refunded_amount)),
                (":now", s(timestamp(now))),
                (":listed", s(keys::orders_in(status))),
            ],
        )?];
        let entry = uuid::Uuid::now_v7().to_string();
        if take > 0 {
            actions.extend(
                Movement {
                    user_id: &order.user_id,
                    amount: -take,
                    kind: kinds::PURCHASE_REFUND,
                    entry: &entry,
                    links: Links {
                        order_id: Some(order_id),
                        ..Links::default()
                    },
                    note: None,
                    by: None,
                }
                .actions(&state.db, now)?,
            );
        }
        match crate::db::transact(&state.db, actions).await {
            Ok(()) => {
                if due > take {
                    tracing::warn!(order_id, user_id = %order.user_id, due, take, "a refunded order's credits were spent: the balance went to zero");
                }
                tracing::info!(order_id, refunded, take, "order refunded");
                return Ok(());
            }
            // The order or the balance moved since the reads: read again.
            Err(err) if crate::db::failed_conditions(&err).is_some() => {}
            Err(err) => return Err(anyhow::Error::new(err).context("refunding an order")),
        }
    }
    anyhow::bail!("the refund of order {order_id} kept racing other changes")
}
