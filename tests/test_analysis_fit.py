"""The batched DoG-jet fit of the analysis: planted parameters come back, it agrees with the
reference ``fit_dog``, and its shortcuts (projection energies, separable least squares) equal
the plain computations."""

import pytest
import torch

from dsconv_ext.analysis import dog_fit
from dsconv_ext.analysis.normalize import normalize_filters
from dsconv_ext.families import dog
from dsconv_ext.families.fitting import cosine, fit_dog


def _planted_dogs(count: int, kernel_size=(7, 7), seed: int = 0):
    """Centre-surround DoGs with every jet term present: identifiable (sigma, gamma)."""
    generator = torch.Generator().manual_seed(seed)
    coeffs = 0.3 * torch.randn(count, dog.NUM_COEFFS, generator=generator, dtype=torch.float64)
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
    # Coefficients, up to the normalisation: normalised filter = (f - mean) / |f - mean|.
    centred_norm = (clean - clean.mean((1, 2), keepdim=True)).flatten(1).norm(dim=1)
    expected = params[:, :7] / centred_norm[:, None]
    error = (fit.params[:, :7] - expected).norm(dim=1) / expected.norm(dim=1)
    assert error.median() < 0.1, error.median()


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
    dense = torch.linalg.lstsq(basis.transpose(1, 2), target.flatten(1)[:, :, None]).solution[:, :, 0]
    dense_fit = (dense[:, None, :] @ basis)[:, 0]
    ours_fit = dog.dog_filters(solved, (5, 7)).flatten(1)
    torch.testing.assert_close(ours_fit, dense_fit, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cos, cosine(dense_fit, target), atol=1e-8, rtol=0)


def test_projection_energies_are_squared_fit_cosines():
    kernel_size = (7, 7)
    sigmas, gammas = dog_fit.default_grid(kernel_size)
    grid = dog_fit._grid_params(sigmas[::6], gammas[::3])
    basis = dog.dog_basis(grid, kernel_size).flatten(2)
    spans = dog_fit._orthonormal_spans(basis).float()
    filters = normalize_filters(torch.randn(30, *kernel_size, generator=torch.Generator().manual_seed(6)))
    energies = dog_fit._projection_energies(filters.flatten(1), spans)  # [30, P]
    for p in range(grid.shape[0]):
        solution = torch.linalg.lstsq(basis[p].t(), filters.flatten(1).double().t()).solution  # [8, 30]
        fit_cos = cosine((basis[p].t() @ solution).t(), filters.flatten(1).double())
        torch.testing.assert_close(energies[:, p].double(), fit_cos.square(), atol=1e-5, rtol=0)
