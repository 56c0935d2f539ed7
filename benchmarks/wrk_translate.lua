-- wrk script: 64 connections POSTing one translate request each (32 tokens, ignore_eos).
-- wrk -t1 -c64 -d20s --latency -s benchmarks/wrk_translate.lua http://127.0.0.1:8000/v1/translate
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"text": "The quick brown fox jumps over the lazy dog. How are you today?", "source_lang": "en", "target_lang": "de", "options": {"max_new_tokens": 32, "ignore_eos": true}}'
