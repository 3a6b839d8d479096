"""The batched DoG-jet fit of the analysis: planted parameters come back, it agrees with the
reference ``fit_dog``, and its shortcuts (projection energies, separable least squares) equal
the plain computations."""

import pytest
import torch

from dsconv_ext.analysis import dog_fit
from dsconv_ext.analysis.normalize import normalize_filters
from dsconv_ext.families import dog
from dsconv_ext.families.fitting import _ridge_solve, cosine, fit_dog


@pytest.fixture(autouse=True)
def _one_thread():
    """As the analysis itself: one thread is fastest on a shared CPU (conftest restores it)."""
    torch.set_num_threads(1)


def _planted_dogs(count: int, kernel_size=(7, 7), seed: int = 0):
    """Centre-surround DoGs plus first derivatives and a cross (Gxy). No Gxx / Gyy: their
    Laplacian part is itself centre-surround and would make gamma unidentifiable."""
    generator = torch.Generator().manual_seed(seed)
    coeffs = 0.3 * torch.randn(count, dog.NUM_COEFFS, generator=generator, dtype=torch.float64)
    coeffs[:, [3, 5]] = 0.0
    coeffs[:, 0] = 1.0
    coeffs[:, 6] = -(0.5 + 0.5 * torch.rand(count, generator=generator, dtype=torch.float64))
    coeffs[:, 7] = 0.0
    sigma = 0.6 + 0.6 * torch.rand(count, generator=generator, dtype=torch.float64)
    gamma = 0.35 + 0.3 * torch.rand(count, generator=generator, dtype=torch.float64)
    params = dog.make_params(coeffs, sigma, gamma)
    return params, sigma, gamma, dog.dog_filters(params, kernel_size)


def test_planted_parameters_are_recovered():
    params, sigma, gamma, clean = _planted_dogs(400)
    generator = torch.Generator().manual_seed(1)
    rms = clean.flatten(1).square().mean(1).sqrt()[:, None, None]
    noisy = clean + 0.03 * rms * torch.randn(clean.shape, generator=generator, dtype=torch.float64)
    fit = dog_fit.fit_dog_batched(normalize_filters(noisy))

    clean_unit = normalize_filters(clean).double()
    fitted = dog.dog_filters(fit.params, (7, 7))
    assert cosine(fitted, clean_unit).median() > 0.999  # the fit sees through the noise
    assert fit.cosine.min() > 0.99
    sigma_error = (fit.sigma.double() - sigma).abs() / sigma
    assert sigma_error.median() < 0.05, sigma_error.median()
    assert (fit.gamma.double() - gamma).abs().median() < 0.06
    # Coefficients, up to the normalisation: normalised filter = (f - mean) / |f - mean|. The
    # odd and cross terms (Gx, Gy, Gxy) are orthogonal to the centre-surround part and come back
    # directly; centre and surround trade off with the constant, so only their signs are checked.
    centred_norm = (clean - clean.mean((1, 2), keepdim=True)).flatten(1).norm(dim=1)
    expected = params[:, [1, 2, 4]] / centred_norm[:, None]
    error = (fit.params[:, [1, 2, 4]] - expected).norm(dim=1) / expected.norm(dim=1)
    assert error.median() < 0.05, error.median()
    on_centre = (fit.params[:, 0] > 0) & (fit.params[:, 6] < 0)
    assert on_centre.float().mean() > 0.95


@pytest.mark.parametrize("kernel_size", [(3, 3), (5, 5), (7, 7), (5, 3)])
def test_agrees_with_reference_fit_dog(kernel_size):
    generator = torch.Generator().manual_seed(2)
    raw = torch.randn(120, *kernel_size, generator=generator)
    filters = normalize_filters(raw)
    fit = dog_fit.fit_dog_batched(filters)
    _, reference_cos = fit_dog(filters, refine_steps=30)
    # Grid + sub-grid refinement lands within a hair of grid + L-BFGS.
    assert (fit.cosine.double() - reference_cos).min() > -0.03
    assert (fit.cosine.double() - reference_cos).median() > -0.002
    # The reported cosine is the cosine of the returned parameters' filters.
    rebuilt = dog.dog_filters(fit.params, kernel_size)
    torch.testing.assert_close(cosine(rebuilt, filters.double()).float(), fit.cosine, atol=1e-5, rtol=0)


def test_noise_free_filters_are_fitted_exactly():
    _, _, _, clean = _planted_dogs(200, seed=3)
    fit = dog_fit.fit_dog_batched(normalize_filters(clean))
    assert fit.cosine.min() > 0.999


def test_separable_solve_equals_dense_least_squares():
    params, _, _, _ = _planted_dogs(50, kernel_size=(5, 7), seed=4)
    generator = torch.Generator().manual_seed(5)
    target = torch.randn(50, 5, 7, generator=generator, dtype=torch.float64)
    solved, cos = dog_fit._solve_per_filter(target, params, (5, 7), "integrated")
    basis = dog.dog_basis(params, (5, 7)).flatten(2)  # [n, 8, K]
    dense_fit = torch.stack([  # the same ridge least squares, one filter at a time
        (_ridge_solve(basis[i], target[i].flatten()[None], dog_fit.RIDGE) @ basis[i])[0] for i in range(50)
    ])
    ours_fit = dog.dog_filters(solved, (5, 7)).flatten(1)
    torch.testing.assert_close(ours_fit, dense_fit, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cos, cosine(dense_fit, target), atol=1e-8, rtol=0)


def test_grid_scores_are_squared_cosines_of_the_ridge_fits():
    kernel_size = (7, 7)
    sigmas, gammas = dog_fit.default_grid(kernel_size)
    grid = dog_fit._grid_params(sigmas, gammas)
    basis = dog.dog_basis(grid, kernel_size).flatten(2)  # [P, 8, K]
    spans = dog_fit._ridge_spans(basis).float()
    filters = normalize_filters(torch.randn(30, *kernel_size, generator=torch.Generator().manual_seed(6))).flatten(1)
    scores = dog_fit._fit_scores(filters, spans)  # [30, P]
    # fit_dog's grid step: ridge least squares at every grid point.
    fits = _ridge_solve(basis, filters.double(), dog_fit.RIDGE) @ basis  # [P, 30, K]
    expected = torch.stack([cosine(fits[p], filters.double()) for p in range(grid.shape[0])], 1).square()
    torch.testing.assert_close(scores.double(), expected, atol=2e-4, rtol=0)
