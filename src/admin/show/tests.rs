use super::*;

#[test]
fn timestamps_are_civil_utc() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(timestamp(at).as_deref(), Some("2023-11-14 22:13:20 UTC"));
    assert_eq!(
        timestamp(SystemTime::UNIX_EPOCH).as_deref(),
        Some("1970-01-01 00:00:00 UTC")
    );
}
