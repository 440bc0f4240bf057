//! The listing's copy of the whole catalogue, in process: each product's filter and sort keys beside its
//! serialized body, so a page of any filter and sort, with an exact `totalElements`, costs no MySQL query.
//!
//! Freshness (docs/ranking.md#listing-and-detail-the-catalogue-copies): [`Listing::changed`] marks products
//! stale (the catalogue calls it after its own commits and for the changes other instances announce), and
//! the next page reads just those from MySQL before it answers. The whole catalogue is read again every
//! [`RELOAD_PERIOD`] in the background, and a copy older than [`MAX_AGE`] is never served: that bounds how
//! long a change whose announcement was lost stays unseen, as for the detail copies.
//!
//! Every read of MySQL runs under one gate, so reads apply in the order they were made and none overwrites
//! a newer one; a product that changes while it is read stays stale and is read again by the next page. A
//! page that waited at the gate while a read that began after it arrived completed is served without a read
//! of its own: that read saw every change made before the page was asked for. So while payments keep marking
//! products stale, the pages waiting share one read instead of reading one after the other.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use sqlx::MySqlPool;

use super::catalog::MAX_AGE;
use super::{Filter, ListRequest, Product, Sort, Status, db, fold};
use crate::id::ProductId;

/// How often the whole catalogue is read again, in the background. Shorter bounds the life of a lost
/// announcement tighter but reads every product (one query of products, one of options) more often; it stays
/// under [`MAX_AGE`], so no request waits for a whole read while MySQL answers.
pub const RELOAD_PERIOD: Duration = Duration::from_secs(1);
/// Most computed pages kept (distinct filter, sort and page combinations); beyond, they are computed again.
const MAX_PAGES: usize = 1_000;

/// The copy, what is stale in it, and the pages computed from it.
pub(super) struct Listing {
    copy: RwLock<Option<Copy>>,
    stale: Mutex<Stale>,
    pages: RwLock<HashMap<ListRequest, ComputedPage>>,
    /// Serializes reads of MySQL: a burst of pages after a change reads once, and reads apply in order.
    gate: tokio::sync::Mutex<()>,
    /// Reads begun (numbered from 1, under the gate).
    reads_begun: AtomicU64,
    /// The number of the last read applied.
    read_applied: AtomicU64,
}

/// Every product, as of the reads applied so far.
struct Copy {
    /// Ascending id.
    entries: Vec<Entry>,
    /// Raised by every read applied, so a page computed before it is not served after.
    generation: u64,
    /// When the whole catalogue was last read.
    loaded: Instant,
}

/// One product: what filters and sorts compare, and its body in the listing.
struct Entry {
    id: ProductId,
    /// The name as [`fold`] leaves it, to compare with a folded search.
    folded_name: Box<str>,
    price: i64,
    stock: i64,
    sold: i64,
    /// The product serialized, as a listing shows it.
    body: Bytes,
}

/// Products changed since the reads applied; each mark numbered, so a read clears only the marks it saw.
#[derive(Clone, Default)]
struct Stale {
    ids: HashMap<ProductId, u64>,
    /// Set when what changed is unknown: the next read is of every product.
    everything: Option<u64>,
    marks: u64,
}

struct ComputedPage {
    generation: u64,
    body: Bytes,
}

impl Listing {
    pub fn new() -> Self {
        Self {
            copy: RwLock::default(),
            stale: Mutex::default(),
            pages: RwLock::default(),
            gate: tokio::sync::Mutex::new(()),
            reads_begun: AtomicU64::new(0),
            read_applied: AtomicU64::new(0),
        }
    }

    /// Marks `ids` stale: the next page reads them first.
    pub fn changed(&self, ids: &[ProductId]) {
        let mut stale = self.stale.lock().expect("never poisoned");
        for id in ids {
            stale.marks += 1;
            let mark = stale.marks;
            stale.ids.insert(*id, mark);
        }
    }

    /// Marks every product stale: the next page reads the whole catalogue first.
    pub fn changed_everything(&self) {
        let mut stale = self.stale.lock().expect("never poisoned");
        stale.marks += 1;
        stale.everything = Some(stale.marks);
    }

    /// One page of the listing, serialized; reads MySQL only for what changed since the last page.
    pub async fn page(&self, db: &MySqlPool, request: &ListRequest) -> Result<Bytes, sqlx::Error> {
        if !self.is_current() {
            let arrived = self.reads_begun.load(AtomicOrdering::Acquire);
            let _reading = self.gate.lock().await;
            let read_since = self.read_applied.load(AtomicOrdering::Acquire) > arrived;
            if !read_since && !self.is_current() {
                self.read(db, false).await?;
            }
        }
        let (generation, body) = {
            let held = self.copy.read().expect("never poisoned");
            let copy = held.as_ref().expect("read above, and never emptied");
            if let Some(page) = self.pages.read().expect("never poisoned").get(request)
                && page.generation == copy.generation
            {
                return Ok(page.body.clone());
            }
            (copy.generation, copy.page(request))
        };
        let mut pages = self.pages.write().expect("never poisoned");
        if pages.len() >= MAX_PAGES {
            pages.clear();
        }
        pages.insert(request.clone(), ComputedPage { generation, body: body.clone() });
        Ok(body)
    }

    /// Reads the whole catalogue again, if this instance has listed it at all (see [`RELOAD_PERIOD`]).
    pub async fn reload(&self, db: &MySqlPool) -> Result<(), sqlx::Error> {
        if self.copy.read().expect("never poisoned").is_none() {
            return Ok(());
        }
        let _reading = self.gate.lock().await;
        self.read(db, true).await
    }

    /// Whether the copy may be served as it is: read, young enough, nothing stale.
    fn is_current(&self) -> bool {
        let stale = self.stale.lock().expect("never poisoned");
        if !stale.ids.is_empty() || stale.everything.is_some() {
            return false;
        }
        drop(stale);
        self.copy.read().expect("never poisoned").as_ref().is_some_and(|copy| copy.loaded.elapsed() < MAX_AGE)
    }

    /// Under the gate: reads the stale products, or every product when `whole`, when everything is stale or
    /// the copy is missing or too old; then clears the marks this read saw. A mark made meanwhile stays.
    async fn read(&self, db: &MySqlPool, whole: bool) -> Result<(), sqlx::Error> {
        let number = self.reads_begun.fetch_add(1, AtomicOrdering::AcqRel) + 1;
        let seen = self.stale.lock().expect("never poisoned").clone();
        let too_old = self.copy.read().expect("never poisoned").as_ref().is_none_or(|c| c.loaded.elapsed() >= MAX_AGE);
        let whole = whole || too_old || seen.everything.is_some();
        if whole {
            let entries = db::products(db, None).await?.iter().map(Entry::new).collect();
            let mut copy = self.copy.write().expect("never poisoned");
            let generation = copy.as_ref().map_or(0, |copy| copy.generation + 1);
            *copy = Some(Copy { entries, generation, loaded: Instant::now() });
        } else {
            let mut ids: Vec<ProductId> = seen.ids.keys().copied().collect();
            ids.sort_unstable();
            let read = db::products(db, Some(&ids)).await?;
            let mut copy = self.copy.write().expect("never poisoned");
            copy.as_mut().expect("only a copy that is there is read in part").apply(&ids, &read);
        }
        let mut stale = self.stale.lock().expect("never poisoned");
        for (id, mark) in &seen.ids {
            if stale.ids.get(id) == Some(mark) {
                stale.ids.remove(id);
            }
        }
        if whole && stale.everything == seen.everything {
            stale.everything = None;
        }
        self.read_applied.store(number, AtomicOrdering::Release);
        Ok(())
    }
}

impl Copy {
    /// Replaces the entries of `ids` by the products read for them (ascending id); one not read is gone.
    fn apply(&mut self, ids: &[ProductId], read: &[Product]) {
        let mut read = read.iter().peekable();
        for id in ids {
            let product = read.next_if(|product| product.id == *id);
            match (self.entries.binary_search_by_key(id, |entry| entry.id), product) {
                (Ok(at), Some(product)) => self.entries[at] = Entry::new(product),
                (Err(at), Some(product)) => self.entries.insert(at, Entry::new(product)),
                (Ok(at), None) => {
                    self.entries.remove(at);
                }
                (Err(_), None) => {}
            }
        }
        self.generation += 1;
    }

    /// The page `request` asks for, serialized as [`super::ProductPage`].
    fn page(&self, request: &ListRequest) -> Bytes {
        let size = request.page.size() as usize;
        let offset = usize::try_from(request.page.offset()).unwrap_or(usize::MAX);
        let (total, shown): (usize, Vec<&Entry>) = if request.filter.is_empty() && request.sort == Sort::Id {
            (self.entries.len(), self.entries.get(offset..).unwrap_or_default().iter().take(size).collect())
        } else {
            let mut matches: Vec<&Entry> = self.entries.iter().filter(|entry| entry.matches(&request.filter)).collect();
            let total = matches.len();
            order(&mut matches, request.sort, offset.saturating_add(size));
            (total, matches.get(offset..).unwrap_or_default().iter().take(size).copied().collect())
        };
        let mut body = Vec::with_capacity(shown.iter().map(|entry| entry.body.len() + 1).sum::<usize>() + 80);
        body.extend_from_slice(b"{\"products\":[");
        for (n, entry) in shown.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&entry.body);
        }
        write!(body, "],\"page\":{},\"size\":{},\"totalElements\":{total}}}", request.page.page(), request.page.size())
            .expect("writing to a Vec cannot fail");
        Bytes::from(body)
    }
}

/// Puts the first `end` of `matches` (ascending id) in `sort`'s order, ties by lower id; the rest is left in
/// any order. Selecting the first `end` before sorting them keeps a first page of many matches linear.
fn order(matches: &mut Vec<&Entry>, sort: Sort, end: usize) {
    let by = |a: &&Entry, b: &&Entry| -> Ordering {
        let key = match sort {
            Sort::Id => Ordering::Equal,
            Sort::Price => a.price.cmp(&b.price),
            Sort::PriceDesc => b.price.cmp(&a.price),
            Sort::Sold => a.sold.cmp(&b.sold),
            Sort::SoldDesc => b.sold.cmp(&a.sold),
        };
        key.then(a.id.cmp(&b.id))
    };
    if sort == Sort::Id {
        return;
    }
    if end < matches.len() {
        matches.select_nth_unstable_by(end, by);
        matches.truncate(end);
    }
    matches.sort_unstable_by(by);
}

impl Entry {
    fn new(product: &Product) -> Self {
        Self {
            id: product.id,
            folded_name: fold(&product.name).into(),
            price: product.price,
            stock: product.stock,
            sold: product.sold_count,
            body: Bytes::from(serde_json::to_vec(product).expect("a product serializes")),
        }
    }

    fn matches(&self, filter: &Filter) -> bool {
        filter.status.is_none_or(|status| status == Status::for_stock(self.stock))
            && filter.min_price.is_none_or(|min| self.price >= min)
            && filter.max_price.is_none_or(|max| self.price <= max)
            && filter.name_contains.as_deref().is_none_or(|part| self.folded_name.contains(part))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::OptionId;
    use crate::product::{PageRequest, ProductOption, ProductPage};

    fn product(id: i64, name: &str, price: i64, stock: i64, sold: i64) -> Product {
        let option = ProductOption {
            id: OptionId::new(id).unwrap(),
            name: "default".to_owned(),
            price,
            stock,
            status: Status::for_stock(stock),
        };
        Product::new(ProductId::new(id).unwrap(), name.to_owned(), price, vec![option], sold)
    }

    fn copy(products: &[Product]) -> Copy {
        Copy { entries: products.iter().map(Entry::new).collect(), generation: 0, loaded: Instant::now() }
    }

    fn request(filter: Filter, sort: Sort, page: i64, size: i64) -> ListRequest {
        ListRequest { filter, sort, page: PageRequest::parse(Some(page), Some(size)).unwrap() }
    }

    fn ids(body: &Bytes) -> (Vec<i64>, i64) {
        let page: serde_json::Value = serde_json::from_slice(body).unwrap();
        let ids = page["products"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
        (ids, page["totalElements"].as_i64().unwrap())
    }

    #[test]
    fn an_assembled_page_is_the_page_serialized_whole() {
        let products = [product(1, "a", 10, 1, 0), product(2, "b", 20, 0, 3)];
        let body = copy(&products).page(&request(Filter::default(), Sort::Id, 0, 20));
        let whole = ProductPage { products: products.to_vec(), page: 0, size: 20, total_elements: 2 };
        assert_eq!(String::from_utf8(body.to_vec()).unwrap(), serde_json::to_string(&whole).unwrap());
    }

    #[test]
    fn a_sort_breaks_ties_by_lower_id_on_every_page() {
        let products: Vec<Product> = (1..=9).map(|id| product(id, "p", 100 * (id % 3), 1, id % 2)).collect();
        let copy = copy(&products);
        let all = |sort| {
            (0..5).flat_map(|page| ids(&copy.page(&request(Filter::default(), sort, page, 2))).0).collect::<Vec<_>>()
        };
        assert_eq!(all(Sort::Price), [3, 6, 9, 1, 4, 7, 2, 5, 8]);
        assert_eq!(all(Sort::PriceDesc), [2, 5, 8, 1, 4, 7, 3, 6, 9]);
        assert_eq!(all(Sort::Sold), [2, 4, 6, 8, 1, 3, 5, 7, 9]);
        assert_eq!(all(Sort::SoldDesc), [1, 3, 5, 7, 9, 2, 4, 6, 8]);
    }

    #[test]
    fn a_partial_read_replaces_inserts_and_removes_only_what_it_was_asked_for() {
        let mut copy = copy(&[product(1, "a", 10, 1, 0), product(3, "c", 10, 1, 0)]);
        let asked = [ProductId::new(2).unwrap(), ProductId::new(3).unwrap(), ProductId::new(4).unwrap()];
        copy.apply(&asked, &[product(2, "b", 10, 1, 0), product(4, "d", 10, 0, 5)]);
        let (listed, total) = ids(&copy.page(&request(Filter::default(), Sort::Id, 0, 20)));
        assert_eq!((listed, total, copy.generation), (vec![1, 2, 4], 3, 1));
        let sold_out = Filter::parse(Some(Status::SoldOut), None, None, None).unwrap();
        assert_eq!(ids(&copy.page(&request(sold_out, Sort::Id, 0, 20))), (vec![4], 1));
    }
}
