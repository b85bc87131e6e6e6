//! Any bytes, as a `ScoreRequest` and as a `ScoreBatchRequest`: the decoder never panics, never
//! loops, and a request it accepts is read into a row and evaluated without panicking, with a
//! bounded number of violations.
#![no_main]

use std::sync::OnceLock;

use altscore_kernels::plan::Plan;
use altscore_kernels::row::MAX_LISTED_MAP_VIOLATIONS;

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        let json = r#"{"name":"fuzz","version":1,"inputs":[
            {"name":"x","kind":"number","required":true,"min":0.0,"max":100.0,"missing":{"strategy":"nan"}},
            {"name":"n","kind":"integer","required":false,"min":null,"max":null,"missing_codes":[-1.0],"missing":{"strategy":"constant","value":0.0}},
            {"name":"c","kind":"categorical","required":false,"min":null,"max":null,"missing":{"strategy":"category","value":"a"}}],
            "features":[
            {"name":"x","op":{"kind":"log1p","input":"x"},"output":true},
            {"name":"r","op":{"kind":"ratio","numerator":"x","denominator":"n","on_zero":0.0},"output":true},
            {"name":"c","op":{"kind":"one_hot","input":"c","categories":["a","b"],"unknown":"error"},"output":true}]}"#;
        match Plan::from_json(json) {
            Ok(p) => p,
            Err(e) => panic!("fuzz plan: {e}"),
        }
    })
}

fn evaluate(view: &altscore_wire::RequestView<'_>) {
    let plan = plan();
    let Ok(raw) = plan.read(&view.applicant);
    let mut scratch = vec![0.0; plan.n_slots()];
    let mut out = vec![0.0f32; plan.n_outputs()];
    let violations = plan.evaluate(raw, &mut scratch, &mut out);
    assert!(violations.len() <= MAX_LISTED_MAP_VIOLATIONS + 2 + plan.def.inputs.len() + 2);
    if violations.is_empty() {
        assert!(out.iter().all(|v| v.is_nan() || v.is_finite()));
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(view) = altscore_wire::parse_request(data) {
        evaluate(&view);
    }
    if let Ok(views) = altscore_wire::parse_batch(data, 64) {
        assert!(views.len() <= 64);
        for view in &views {
            evaluate(view);
        }
    }
});
