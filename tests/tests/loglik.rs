//! Batched log-likelihood (`eval::loglik`): sequences of many lengths packed side by side, long
//! ones chunked through the KV cache, give the log-probs of one plain forward per sequence
//! (log-softmax in float64 on the host), whatever the packing.

use softcot_core::eval::loglik::{LogLik, Scored};
use softcot_core::model::init::preset;
use softcot_core::model::{Batch, Input, LogitRows, Model};
use softcot_core::philox::{key_of, philox4x32_10};
use softcot_core::Backend;
use softcot_cpu::CpuBackend;
use softcot_tests::memmodel::random_model;

/// log p(ids[t] | ids[<t]) for t >= from, from one forward over the whole sequence.
fn plain(be: &CpuBackend, model: &Model<CpuBackend>, ids: &[u32], from: usize) -> Vec<f64> {
    let (t, v) = (ids.len(), model.cfg.vocab_size);
    let mut ws = model.new_workspace(be, t, t).unwrap();
    let mut cache = model.new_cache(be, 1, t).unwrap();
    let (dev, zero) = (be.upload_ids(ids).unwrap(), be.upload_ids(&[0]).unwrap());
    let batch = Batch {
        input: Input::Ids(&dev),
        slots: &zero,
        start: &zero,
        b: 1,
        t,
        max_end: t,
        logits: LogitRows::All,
    };
    model.forward(be, &mut ws, &mut cache, &batch).unwrap();
    let logits = be.download(&ws.logits, t * v).unwrap();
    (from..t)
        .map(|p| {
            let z = &logits[(p - 1) * v..p * v];
            let m = z.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            let lse = m + z.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            z[ids[p] as usize] as f64 - lse
        })
        .collect()
}

#[test]
fn packed_and_chunked_scoring_matches_plain_forwards() {
    let be = CpuBackend::new();
    let cfg = preset("tiny").unwrap();
    let model = random_model(&be, &cfg, 7);
    let key = key_of(9);
    // Lengths around the 16-position calls: single tokens, short rows packed together, rows that
    // fill a call, and rows chunked over several calls.
    let lens = [1usize, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 40, 4, 6];
    let seqs: Vec<Vec<u32>> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            (0..n as u32)
                .map(|j| philox4x32_10([i as u32, j, 0, 0], key)[0] % cfg.vocab_size as u32)
                .collect()
        })
        .collect();
    let froms: Vec<usize> = lens.iter().enumerate().map(|(i, &n)| 1 + (i * 5) % n).collect();
    let scored: Vec<Scored> = seqs
        .iter()
        .zip(&froms)
        .map(|(s, &from)| Scored { ids: s, from })
        .collect();
    let want: Vec<Vec<f64>> = seqs
        .iter()
        .zip(&froms)
        .map(|(s, &f)| plain(&be, &model, s, f))
        .collect();
    for (tokens, rows) in [(16, 4), (16, 1), (7, 3), (64, 16)] {
        let mut ll = LogLik::new(&be, &model, tokens, rows, 40).unwrap();
        let count = std::cell::Cell::new(0);
        let got = ll
            .logprobs(&be, &model, &scored, &|n| count.set(count.get() + n))
            .unwrap();
        assert_eq!(count.get(), seqs.len());
        let mut worst = 0f64;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.len(), w.len(), "sequence {i}");
            for (a, b) in g.iter().zip(w) {
                worst = worst.max((*a as f64 - b).abs());
            }
        }
        println!("{tokens} positions x {rows} rows per call: max |log-prob diff| {worst:.2e} vs plain forwards");
        assert!(worst < 1e-5, "{worst}");
    }
}

#[test]
fn bad_sequences_are_refused_by_index() {
    let be = CpuBackend::new();
    let cfg = preset("tiny").unwrap();
    let model = random_model(&be, &cfg, 7);
    let mut ll = LogLik::new(&be, &model, 16, 4, 20).unwrap();
    let v = cfg.vocab_size as u32;
    let cases: [(&[u32], usize, &str); 4] = [
        (&[1, 2], 0, "sequence 1: scored positions start at 0"),
        (&[1, 2], 3, "sequence 1: scored positions start at 3 of 2"),
        (&[1, v], 1, "sequence 1: token id"),
        (&[0; 21], 1, "sequence 1: 21 tokens exceed the 20 positions"),
    ];
    for (ids, from, want) in cases {
        let seqs = [Scored { ids: &[3, 4], from: 1 }, Scored { ids, from }];
        let e = ll.logprobs(&be, &model, &seqs, &|_| ()).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
}
