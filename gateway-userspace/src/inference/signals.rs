//! Load signals from model servers' Prometheus metrics, under each engine's exact names:
//! vLLM (`vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`,
//! older `vllm:gpu_cache_usage_perc`), SGLang (`sglang:num_queue_reqs`, `sglang:num_running_reqs`,
//! `sglang:token_usage`), TGI (`tgi_queue_size`, `tgi_batch_current_size`), Triton/TRT-LLM
//! (`nv_inference_pending_request_count`, `nv_trt_llm_request_metrics{request_type=...}`,
//! `nv_trt_llm_kv_cache_block_metrics`), llama.cpp (`llamacpp:requests_deferred`,
//! `llamacpp:requests_processing`, `llamacpp:kv_cache_usage_ratio`).

/// What a scrape says about a server's load. Missing signals are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    pub waiting: Option<f64>,
    pub running: Option<f64>,
    /// KV-cache utilisation, 0..1.
    pub kv_cache: Option<f64>,
}

/// Parses the text exposition format; samples of one metric with several label sets are summed
/// (several models or GPUs on one server).
pub fn parse(text: &str) -> Signals {
    let mut s = Signals::default();
    let mut trt_kv = (None::<f64>, None::<f64>); // (used, max)
    let add = |slot: &mut Option<f64>, v: f64| *slot = Some(slot.unwrap_or(0.0) + v);
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        // `name{labels} value [timestamp]`; label values may contain spaces.
        let split_at = match line.find('}') {
            Some(close) => close + 1,
            None => line.find(char::is_whitespace).unwrap_or(line.len()),
        };
        let (series, rest) = line.split_at(split_at);
        let Some(Ok(v)) = rest.split_whitespace().next().map(str::parse::<f64>) else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        match name {
            "vllm:num_requests_waiting"
            | "sglang:num_queue_reqs"
            | "tgi_queue_size"
            | "nv_inference_pending_request_count"
            | "llamacpp:requests_deferred" => add(&mut s.waiting, v),
            "vllm:num_requests_running"
            | "sglang:num_running_reqs"
            | "tgi_batch_current_size"
            | "llamacpp:requests_processing" => add(&mut s.running, v),
            "vllm:kv_cache_usage_perc"
            | "vllm:gpu_cache_usage_perc"
            | "sglang:token_usage"
            | "llamacpp:kv_cache_usage_ratio" => s.kv_cache = Some(s.kv_cache.unwrap_or(0.0).max(v)),
            "nv_trt_llm_request_metrics" => {
                if labels.contains("request_type=\"waiting\"") {
                    add(&mut s.waiting, v);
                } else if labels.contains("request_type=\"active\"") {
                    add(&mut s.running, v);
                }
            }
            "nv_trt_llm_kv_cache_block_metrics" => {
                if labels.contains("kv_cache_block_type=\"used\"") {
                    trt_kv.0 = Some(trt_kv.0.unwrap_or(0.0) + v);
                } else if labels.contains("kv_cache_block_type=\"max\"") {
                    trt_kv.1 = Some(trt_kv.1.unwrap_or(0.0) + v);
                }
            }
            _ => {}
        }
    }
    if let (Some(used), Some(max)) = trt_kv
        && max > 0.0
        && s.kv_cache.is_none()
    {
        s.kv_cache = Some(used / max);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engines_names() {
        let vllm = "# HELP x\nvllm:num_requests_waiting{model_name=\"m\"} 3.0\nvllm:num_requests_running{model_name=\"m\"} 5.0\nvllm:kv_cache_usage_perc{model_name=\"m\"} 0.42\n";
        assert_eq!(parse(vllm), Signals { waiting: Some(3.0), running: Some(5.0), kv_cache: Some(0.42) });
        let old = "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\n";
        assert_eq!(parse(old).kv_cache, Some(0.5));
        let sglang = "sglang:num_queue_reqs{model_name=\"m\"} 2\nsglang:num_running_reqs{model_name=\"m\"} 7\nsglang:token_usage{model_name=\"m\"} 0.9\n";
        assert_eq!(parse(sglang), Signals { waiting: Some(2.0), running: Some(7.0), kv_cache: Some(0.9) });
        let tgi = "tgi_queue_size 4\ntgi_batch_current_size 8\n";
        assert_eq!(parse(tgi), Signals { waiting: Some(4.0), running: Some(8.0), kv_cache: None });
        let trt = "nv_inference_pending_request_count{model=\"ensemble\",version=\"1\"} 6\nnv_trt_llm_request_metrics{model=\"tensorrt_llm\",request_type=\"active\",version=\"1\"} 9\nnv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"used\",model=\"tensorrt_llm\"} 30\nnv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"max\",model=\"tensorrt_llm\"} 120\n";
        assert_eq!(parse(trt), Signals { waiting: Some(6.0), running: Some(9.0), kv_cache: Some(0.25) });
        let llama = "llamacpp:requests_processing 1\nllamacpp:requests_deferred 2\nllamacpp:kv_cache_usage_ratio 0.125\n";
        assert_eq!(parse(llama), Signals { waiting: Some(2.0), running: Some(1.0), kv_cache: Some(0.125) });
        let two_models =
            "vllm:num_requests_waiting{model_name=\"a\"} 1\nvllm:num_requests_waiting{model_name=\"b\"} 2\n";
        assert_eq!(parse(two_models).waiting, Some(3.0));
    }
}
