//! Codec microbenchmarks: frame decoding over pgbench-like traffic, and startup packet decoding.
//!
//! Run with `cargo bench --bench codec`. Throughput is in frames (or packets), so criterion's
//! `thrpt` line gives frames per second; time per frame is its inverse.

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use tidepool::client::params::ClientParams;
use tidepool::protocol::backend_msg::{self, begin, finish, put_cstr};
use tidepool::protocol::frame::peek_header;
use tidepool::protocol::startup::encode_startup;
use tidepool::protocol::{frontend_msg, FrameDecoder, StartupDecoder, StartupPacket};

/// Transactions in each traffic buffer.
const TRANSACTIONS: u32 = 1_000;
const LIMIT: u32 = 64 << 20;

/// What `pgbench -S` sends per transaction in simple mode: one Query.
fn client_simple(out: &mut BytesMut, aid: u32) {
    frontend_msg::query(
        out,
        &format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"),
    );
}

/// What `pgbench -S -M extended` sends: Parse, Bind, Describe, Execute, Sync.
fn client_extended(out: &mut BytesMut, aid: u32) {
    let s = begin(out, b'P');
    put_cstr(out, "");
    put_cstr(out, "SELECT abalance FROM pgbench_accounts WHERE aid = $1;");
    out.put_i16(0);
    finish(out, s);
    let s = begin(out, b'B');
    put_cstr(out, "");
    put_cstr(out, "");
    out.put_i16(0);
    out.put_i16(1);
    let value = aid.to_string();
    out.put_i32(value.len() as i32);
    out.extend_from_slice(value.as_bytes());
    out.put_i16(0);
    finish(out, s);
    let s = begin(out, b'D');
    out.put_u8(b'P');
    put_cstr(out, "");
    finish(out, s);
    let s = begin(out, b'E');
    put_cstr(out, "");
    out.put_i32(0);
    finish(out, s);
    frontend_msg::sync(out);
}

/// The server's answer to one select: RowDescription, DataRow, CommandComplete, ReadyForQuery.
fn server_select(out: &mut BytesMut, aid: u32) {
    backend_msg::row_description(out, &[("abalance", 23)]);
    let balance = (aid % 5000).to_string();
    backend_msg::data_row(out, &[Some(&balance)]);
    backend_msg::command_complete(out, "SELECT 1");
    backend_msg::ready_for_query(out, b'I');
}

/// Both directions of `TRANSACTIONS` transactions, half simple and half extended protocol,
/// with the number of frames in the buffer.
fn mixed_traffic() -> (BytesMut, u64) {
    let mut out = BytesMut::new();
    let mut frames = 0;
    for aid in 0..TRANSACTIONS {
        if aid % 2 == 0 {
            client_simple(&mut out, aid);
            frames += 1;
        } else {
            client_extended(&mut out, aid);
            frames += 5;
        }
        server_select(&mut out, aid);
        frames += 4;
    }
    (out, frames)
}

fn traffic(name: &str, write: fn(&mut BytesMut, u32), per_tx: u64) -> (String, BytesMut, u64) {
    let mut out = BytesMut::new();
    for aid in 0..TRANSACTIONS {
        write(&mut out, aid);
    }
    (name.to_string(), out, per_tx * u64::from(TRANSACTIONS))
}

fn frame_decoding(c: &mut Criterion) {
    let (mixed, mixed_frames) = mixed_traffic();
    let buffers = [
        ("pgbench_select_mixed".to_string(), mixed, mixed_frames),
        traffic("server_T_D_C_Z", server_select, 4),
        traffic("client_Q", client_simple, 1),
        traffic("client_P_B_D_E_S", client_extended, 5),
    ];
    let decoder = FrameDecoder::new(LIMIT);
    let mut group = c.benchmark_group("decode_frame");
    for (name, buf, frames) in &buffers {
        group.throughput(Throughput::Elements(*frames));
        group.bench_function(name.as_str(), |b| {
            b.iter_batched_ref(
                || buf.clone(),
                |buf| {
                    while let Some(frame) = decoder.decode_frame(buf).expect("valid traffic") {
                        black_box(frame);
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    // The relay does not split frames off: it walks headers in place (`peek_header`).
    let mut group = c.benchmark_group("peek_header_walk");
    let (name, buf, frames) = &buffers[0];
    group.throughput(Throughput::Elements(*frames));
    group.bench_function(name.as_str(), |b| {
        b.iter(|| {
            let buf = black_box(&buf[..]);
            let mut pos = 0;
            while let Some((tag, total)) = peek_header(&buf[pos..], LIMIT).expect("valid traffic") {
                black_box(tag);
                pos += total;
            }
            pos
        })
    });
    group.finish();
}

fn startup_decoding(c: &mut Criterion) {
    // What psql 16 sends, plus the extras JDBC adds.
    let mut startup = BytesMut::new();
    encode_startup(
        &[
            ("user", "app"),
            ("database", "app"),
            ("application_name", "pgbench"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "2"),
            ("options", "-c search_path=public --statement-timeout=5s"),
        ],
        &mut startup,
    );
    let ssl_request = BytesMut::from(&[0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f][..]);

    let mut group = c.benchmark_group("startup");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_startup_message", |b| {
        b.iter_batched_ref(
            || startup.clone(),
            |buf| black_box(StartupDecoder::decode(buf).expect("valid")),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("decode_and_interpret_params", |b| {
        b.iter_batched_ref(
            || startup.clone(),
            |buf| match StartupDecoder::decode(buf) {
                Ok(Some(StartupPacket::Startup { params, .. })) => {
                    black_box(ClientParams::from_startup(params).expect("valid"));
                }
                other => panic!("{other:?}"),
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("decode_ssl_request", |b| {
        b.iter_batched_ref(
            || ssl_request.clone(),
            |buf| black_box(StartupDecoder::decode(buf).expect("valid")),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The per-request isolation verdict (transaction mode judges every Query text), next to the
/// trigger-word scan it runs beside.
fn isolation_verdict(c: &mut Criterion) {
    use tidepool::client::features::isolation::{verdict::judge, Hazards};
    let hazards = Hazards::from_rows([("r", "audited"), ("f", "tenant")]);
    let mut group = c.benchmark_group("isolation");
    for (name, sql) in [
        (
            "pgbench_select",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
        ),
        (
            "pgbench_update",
            "UPDATE pgbench_accounts SET abalance = abalance + -2731 WHERE aid = 48213;",
        ),
        (
            "set_config_local",
            "SELECT set_config('request.jwt.claims', $1, true)",
        ),
    ] {
        group.bench_function(format!("judge_{name}"), |b| {
            b.iter(|| judge(std::hint::black_box(sql.as_bytes()), &hazards))
        });
        group.bench_function(format!("words_scan_{name}"), |b| {
            b.iter(|| tidepool::client::features::keywords::Words::scan(std::hint::black_box(sql.as_bytes())))
        });
    }
    group.finish();
}

criterion_group!(benches, frame_decoding, startup_decoding, isolation_verdict);
criterion_main!(benches);
