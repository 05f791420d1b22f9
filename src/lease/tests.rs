use super::*;
use crate::proto::mvccpb::{Event, KeyValue};

fn grant(l: &mut Lessor, id: i64, ttl: i64, index: u64, now: u64) -> Result<i64, LeaseError> {
    l.grant(&LeaseGrantRequest { ttl, id }, index, now)
}

fn put_event(key: &str, lease: i64, prev_lease: Option<i64>) -> Event {
    Event {
        r#type: 0,
        kv: Some(KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            lease,
            version: 1,
            ..Default::default()
        }),
        prev_kv: prev_lease.map(|lease| KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            lease,
            version: 1,
            ..Default::default()
        }),
    }
}

#[test]
fn grant_raises_ttl_to_the_minimum_and_refuses_duplicates_and_huge_ttls() {
    let mut l = Lessor::new(2, 100);
    assert_eq!(grant(&mut l, 7, 1, 1, 0), Ok(2));
    assert_eq!(grant(&mut l, 7, 5, 2, 0), Err(LeaseError::Exists));
    assert_eq!(
        grant(&mut l, 8, MAX_TTL + 1, 3, 0),
        Err(LeaseError::TtlTooLarge)
    );
    assert_eq!(grant(&mut l, 9, 30, 4, 0), Ok(30));
    assert_eq!(l.ids(), vec![7, 9]);
}

#[test]
fn leases_expire_after_their_ttl_in_ticks_and_keep_alives_restart_the_countdown() {
    let mut l = Lessor::new(1, 100);
    grant(&mut l, 1, 3, 1, 0).unwrap();
    assert!(l.expired(29, 5, 10).is_empty());
    assert_eq!(l.renew(1, 2, 20), Some(3));
    assert!(l.expired(49, 5, 10).is_empty());
    assert_eq!(l.expired(50, 5, 10), vec![(1, 2)]);
    // Proposed once; not again until the retry interval passes.
    assert!(l.expired(51, 5, 10).is_empty());
    assert_eq!(l.expired(55, 5, 10), vec![(1, 2)]);
    assert_eq!(l.renew(99, 3, 55), None);
}

#[test]
fn an_expiry_that_raced_a_keep_alive_is_refused() {
    let mut l = Lessor::new(1, 100);
    grant(&mut l, 1, 1, 1, 0).unwrap();
    l.on_events(&[put_event("a", 1, None)]);
    let decided = l.expired(10, 5, 10);
    assert_eq!(decided, vec![(1, 1)]);
    l.renew(1, 5, 10);
    assert_eq!(l.expire(1, 1), None, "renewed after the decision");
    assert!(l.exists(1));
    assert_eq!(l.expire(1, 5), Some(vec![Bytes::from_static(b"a")]));
    assert!(!l.exists(1));
}

#[test]
fn keys_follow_put_and_delete_events() {
    let mut l = Lessor::new(1, 100);
    grant(&mut l, 1, 10, 1, 0).unwrap();
    grant(&mut l, 2, 10, 2, 0).unwrap();
    l.on_events(&[put_event("a", 1, None), put_event("b", 1, None)]);
    // "a" moves to lease 2; "b" is put without a lease.
    l.on_events(&[put_event("a", 2, Some(1)), put_event("b", 0, Some(1))]);
    assert!(l.get(1).unwrap().keys.is_empty());
    assert_eq!(
        l.time_to_live(2, 0).unwrap().keys,
        vec![Bytes::from_static(b"a")]
    );
    // A delete's prev_kv detaches.
    let delete = Event {
        r#type: 1,
        kv: Some(KeyValue {
            key: Bytes::from_static(b"a"),
            ..Default::default()
        }),
        prev_kv: Some(KeyValue {
            key: Bytes::from_static(b"a"),
            lease: 2,
            ..Default::default()
        }),
    };
    l.on_events(&[delete]);
    assert_eq!(l.revoke(2), Ok(vec![]));
    assert_eq!(l.revoke(2), Err(LeaseError::NotFound));
}

#[test]
fn promote_gives_every_lease_its_full_ttl_plus_the_extension() {
    let mut l = Lessor::new(1, 100);
    grant(&mut l, 1, 2, 1, 0).unwrap();
    // Long past its deadline as this member counted while a follower.
    l.promote(100, 10);
    assert!(l.expired(129, 5, 10).is_empty());
    assert_eq!(l.expired(130, 5, 10), vec![(1, 1)]);
}

#[test]
fn restore_rebuilds_keys_from_the_store_and_round_trips_the_records() {
    let mut l = Lessor::new(1, 100);
    grant(&mut l, 1, 10, 4, 0).unwrap();
    grant(&mut l, 2, 20, 5, 0).unwrap();
    let records = records_from_section(Bytes::from(l.encode()));
    let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
    let mut r = Lessor::new(1, 100);
    r.restore(&records, [(a.clone(), 1), (b.clone(), 3)].into_iter(), 0);
    assert_eq!(r.ids(), vec![1, 2]);
    assert_eq!(r.get(1).unwrap().renewed_at, 4);
    assert_eq!(r.time_to_live(1, 0).unwrap().keys, vec![a]);
    assert_eq!(r.time_to_live(2, 0).unwrap().remaining, 20);
}
