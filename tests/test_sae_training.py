"""Training an SAE with sae-lens's trainer, and `sae_quality` against references computed here."""
import numpy as np
import pytest
import torch

pytest.importorskip("sae_lens")

from sae_lens import SAE, StandardSAE, StandardSAEConfig  # noqa: E402

from lensneurons.core.models import toy_model  # noqa: E402
from lensneurons.core.sae_training import eval_tokens, sae_quality, train_sae  # noqa: E402

HOOK = "blocks.0.hook_resid_post"
TEXTS = [f"the cat number {i} sat on the mat and looked at the dog {i * 7 % 13}." for i in range(60)]


@pytest.fixture(scope="module")
def model():
    return toy_model(n_layers=2, d_model=32, d_mlp=64, n_heads=4, n_ctx=64)


@pytest.fixture(scope="module")
def rows(model):
    return eval_tokens(model, TEXTS[40:], context_size=32)


def _sae(W_enc, b_enc, W_dec, b_dec):
    """A standard (ReLU) sae-lens SAE with the given weights."""
    d_in, d_sae = W_enc.shape
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=False))
    sae.load_state_dict({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec})
    return sae


def _identity_sae(d):
    """ReLU(x) − ReLU(−x) = x: a 2d-latent SAE whose reconstruction is exact."""
    eye = torch.eye(d)
    return _sae(torch.cat([eye, -eye], 1), torch.zeros(2 * d), torch.cat([eye, -eye], 0), torch.zeros(d))


def test_eval_tokens_lays_out_rows_like_sae_lens(model, rows):
    bos = model.tokenizer.bos_token_id
    assert rows.shape[1] == 32 and (rows[:, 0] == bos).all()
    # the rows are the texts joined by BOS, cut every 31 tokens
    stream = []
    for t in TEXTS[40:]:
        stream += ([bos] if stream else []) + model.to_tokens(t, prepend_bos=False)[0].tolist()
    assert rows[:, 1:].reshape(-1).tolist() == stream[: rows.shape[0] * 31]


def test_training_runs_and_the_sae_loads_back(model, tmp_path):
    sae, info = train_sae(model, TEXTS[:40], HOOK, d_sae=48, training_tokens=2048, out_dir=tmp_path / "sae",
                          k=4, context_size=32, train_batch_size_tokens=256, store_batch_size_prompts=16,
                          buffer_tokens=1024, n_batches_for_norm_estimate=2, init_b_dec_batches=2)
    loaded = SAE.load_from_disk(tmp_path / "sae")
    assert (loaded.cfg.d_in, loaded.cfg.d_sae) == (32, 48) and loaded.cfg.architecture() == "topk"
    assert loaded.cfg.metadata.hook_name == HOOK and loaded.cfg.normalize_activations == "none"
    for name, p in sae.state_dict().items():
        assert torch.equal(p, loaded.state_dict()[name]), name
    assert info["training_tokens"] == 2048 and info["seconds"] > 0
    q = sae_quality(model, loaded, HOOK, TEXTS[40:], context_size=32)
    assert q["l0"] <= 4 and 0 <= q["dead_fraction"] <= 1 and q["explained_variance"] < 1


def test_exact_reconstruction_scores_one(model, rows):
    q = sae_quality(model, _identity_sae(32), HOOK, rows)
    assert q["explained_variance"] == pytest.approx(1.0, abs=1e-6)
    assert q["loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert q["ce_sae"] == pytest.approx(q["ce_clean"], abs=1e-5)
    assert q["ce_zero"] > q["ce_clean"]
    assert q["tokens"] == (rows != model.tokenizer.bos_token_id).sum().item()


def test_zero_reconstruction_recovers_nothing(model, rows):
    d = 32
    sae = _sae(torch.randn(d, 8), torch.zeros(8), torch.zeros(8, d), torch.zeros(d))
    q = sae_quality(model, sae, HOOK, rows)
    assert q["loss_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert q["ce_sae"] == pytest.approx(q["ce_zero"], abs=1e-6)


def test_measures_match_a_direct_numpy_computation(model, rows):
    torch.manual_seed(0)
    d, m = 32, 24
    W_enc = torch.randn(d, m) / d**0.5
    sae = _sae(W_enc, torch.randn(m) * 0.3, W_enc.T.clone(), torch.randn(d) * 0.1)
    q = sae_quality(model, sae, HOOK, rows, batch_size=3)

    _, cache = model.run_with_cache(rows, names_filter=[HOOK])
    x = cache[HOOK][rows != model.tokenizer.bos_token_id].double().numpy()  # real tokens only
    w_enc, b_enc, w_dec, b_dec = (p.detach().double().numpy() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    f = np.maximum(x @ w_enc + b_enc, 0)
    x_hat = f @ w_dec + b_dec
    ev = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert q["explained_variance"] == pytest.approx(ev, abs=1e-5)
    assert q["l0"] == pytest.approx((f > 0).sum(1).mean(), abs=1e-9)
    assert q["dead_fraction"] == pytest.approx(1 - (f > 0).any(0).mean(), abs=1e-9)

    # the spliced-in loss: x̂ at every real token, BOS left as it is; mean over predictions made at real tokens
    keep = rows != model.tokenizer.bos_token_id
    full = cache[HOOK].clone()
    full[keep] = torch.tensor(x_hat, dtype=full.dtype)
    loss = model.run_with_hooks(rows, fwd_hooks=[(HOOK, lambda act, hook: full)], return_type="loss",
                                loss_per_token=True)
    assert q["ce_sae"] == pytest.approx(loss[keep[:, :-1]].mean().item(), abs=1e-5)


def test_losses_on_the_first_rows_only(model, rows):
    sae = _identity_sae(32)
    full = sae_quality(model, sae, HOOK, rows)
    part = sae_quality(model, sae, HOOK, rows, batch_size=3, ce_rows=2)
    assert part["tokens"] == full["tokens"] and part["explained_variance"] == pytest.approx(1.0, abs=1e-6)
    assert part["ce_tokens"] == (rows[:2] != model.tokenizer.bos_token_id).sum().item() < full["ce_tokens"]
    first = sae_quality(model, sae, HOOK, rows[:2])
    assert part["ce_clean"] == pytest.approx(first["ce_clean"], abs=1e-6)
