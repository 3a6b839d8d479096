"""The filter families: master8 and the discrete Gaussian, the DoG jet, the dog_jet bank, and
the fitting tools."""

import math

import pytest
import torch

from dsconv_ext.families import dog
from dsconv_ext.families.bank import (
    MASTER8_SPEC,
    bank_filters,
    discrete_gaussian,
    dog_jet_bank,
    get_bank,
    master8,
)
from dsconv_ext.families.fitting import cosine, fit_bank, fit_dog

F64 = torch.float64

# ------------------------------------------------------------------ master8


@pytest.mark.parametrize("kernel_size", [3, 5, 7, (4, 5), (3, 7)])
def test_master8_shape_zero_mean_unit_norm(kernel_size):
    bank = master8(kernel_size, dtype=F64)
    ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    assert bank.shape == (8, *ks) and bank.dtype == F64
    assert torch.isfinite(bank).all()
    torch.testing.assert_close(bank.flatten(1).mean(1), torch.zeros(8, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(bank.flatten(1).norm(dim=1), torch.ones(8, dtype=F64), atol=1e-12, rtol=0)
    # eight different filters
    gram = bank.flatten(1) @ bank.flatten(1).t()
    assert (gram - torch.eye(8, dtype=F64)).abs().max() < 0.999


def test_master8_dtype_and_default_size():
    assert master8().shape == (8, 7, 7) and master8().dtype == torch.float32
    torch.testing.assert_close(master8(5), master8(5, dtype=F64).float())


@pytest.mark.parametrize("k", [5, 7])
def test_master8_symmetries(k):
    f1, f2, f3, f4, f5, f6, f7, f8 = master8(k, dtype=F64)
    tol = {"atol": 1e-12, "rtol": 0}
    # F8 (T) and F7 (T - 0.5 Laplacian T) are even in x and in y
    for f in (f7, f8):
        torch.testing.assert_close(f, f.flip(0), **tol)
        torch.testing.assert_close(f, f.flip(1), **tol)
    # F7 has sx == sy: also symmetric under transposition
    torch.testing.assert_close(f7, f7.t(), **tol)
    # F5 central difference in x: odd in x, even in y; F6 the same with x and y swapped
    torch.testing.assert_close(f5, -f5.flip(1), **tol)
    torch.testing.assert_close(f5, f5.flip(0), **tol)
    torch.testing.assert_close(f6, -f6.flip(0), **tol)
    torch.testing.assert_close(f6, f6.flip(1), **tol)
    # The one-sided differences are even across the other axis.
    for f in (f1, f3):
        torch.testing.assert_close(f, f.flip(1), **tol)
    for f in (f2, f4):
        torch.testing.assert_close(f, f.flip(0), **tol)


def _pair_sums(f, first, last, axis):
    """f[i] + f[first + last - i] for i in [first, last] along ``axis``."""
    idx = torch.arange(first, last + 1)
    return f.index_select(axis, idx) + f.index_select(axis, first + last - idx)


@pytest.mark.parametrize("k", [5, 7])
def test_master8_one_sided_differences_are_antisymmetric_about_a_half_pixel(k):
    """A forward difference T(y+1) - T(y) of an even T is odd about y = -1/2 (between offsets -1
    and 0): row r mirrors row k-2-r. A backward difference T(y) - T(y-1) is odd about y = +1/2:
    row r mirrors row k-r. The one row without a partner inside the crop makes the mean nonzero,
    so after mean removal each mirrored pair sums to the same small constant instead of 0."""
    f1, f2, f3, f4 = master8(k, dtype=F64)[:4]
    cases = [
        (f1, 0, k - 2, 0, k - 1),  # forward in y: rows 0..k-2 pair up, row k-1 is alone
        (f3, 1, k - 1, 0, 0),      # backward in y: rows 1..k-1 pair up, row 0 is alone
        (f4, 0, k - 2, 1, k - 1),  # forward in x
        (f2, 1, k - 1, 1, 0),      # backward in x
    ]
    for f, first, last, axis, alone in cases:
        sums = _pair_sums(f, first, last, axis)
        constant = sums.flatten()[0]
        torch.testing.assert_close(sums, torch.full_like(sums, float(constant)), atol=1e-12, rtol=0)
        assert abs(float(constant)) < 1e-2  # small next to the filter's peak (~0.66)
        # the lone row/column carries exactly what the pairs' constant removed: the mean is zero
        lone = f.index_select(axis, torch.tensor([alone]))
        n_pairs_cells = sums.numel() / 2
        torch.testing.assert_close(lone.sum() + n_pairs_cells * constant, torch.zeros((), dtype=F64),
                                   atol=1e-12, rtol=0)
        # and the difference really changes sign across the half pixel, largest next to it
        centre = k // 2
        line = f.select(1 - axis, centre)  # the row / column through the centre, along ``axis``
        left = centre - 1 if first == 0 else centre  # forward: odd about -1/2; backward: about +1/2
        assert line[left] * line[left + 1] < 0
        assert line.abs().argmax() in (left, left + 1)


def test_master8_spec_is_the_published_table():
    assert [op for op, _, _ in MASTER8_SPEC] == [
        "forward_y", "backward_x", "backward_y", "forward_x", "central_x", "central_y", "laplacian", "identity"]
    assert MASTER8_SPEC[0][1:] == (0.644, 0.583) and MASTER8_SPEC[7][1:] == (0.609, 0.601)


def test_master8_identity_is_normalised_discrete_gaussian():
    k = 7
    sx, sy = MASTER8_SPEC[7][1:]
    t = discrete_gaussian(k, sy)[:, None] * discrete_gaussian(k, sx)[None, :]
    t = t - t.mean()
    torch.testing.assert_close(master8(k, dtype=F64)[7], t / t.norm(), atol=1e-12, rtol=0)


# ------------------------------------------------------------------ discrete Gaussian


@pytest.mark.parametrize("size,sigma", [(7, 0.6), (9, 1.107), (21, 2.0), (3, 0.3)])
def test_discrete_gaussian_sums_to_one_and_is_even(size, sigma):
    g = discrete_gaussian(size, sigma)
    assert g.shape == (size,) and g.dtype == F64
    torch.testing.assert_close(g.sum(), torch.tensor(1.0, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(g, g.flip(0), atol=1e-15, rtol=0)
    assert (g > 0).all() and g.argmax() == size // 2
    assert (g[: size // 2 + 1].diff() > 0).all()  # increasing towards the centre


@pytest.mark.parametrize("size,sigma", [(7, 0.644), (9, 1.107), (21, 2.0), (5, 0.1)])
def test_discrete_gaussian_matches_scipy_bessel(size, sigma):
    special = pytest.importorskip("scipy.special")
    n = torch.arange(size) - size // 2
    t = sigma * sigma
    expected = torch.tensor(special.ive(n.abs().numpy(), t), dtype=F64)  # exp(-t) I_n(t)
    expected = expected / expected.sum()
    torch.testing.assert_close(discrete_gaussian(size, sigma), expected, atol=1e-14, rtol=1e-12)


def test_discrete_gaussian_unnormalised_mass_is_one():
    # sum_n exp(-t) I_n(t) = 1, so a wide grid barely needs the normalisation
    special = pytest.importorskip("scipy.special")
    g = discrete_gaussian(41, 1.5)
    torch.testing.assert_close(g[20], torch.tensor(float(special.ive(0, 2.25)), dtype=F64), atol=1e-12, rtol=0)


def test_discrete_gaussian_rejects_even_size():
    with pytest.raises(ValueError):
        discrete_gaussian(4, 1.0)


# ------------------------------------------------------------------ DoG jet


def single(term: str, sigma: float = 1.5, gamma: float = 0.5, value: float = 1.0, channels: int = 1):
    coeffs = torch.zeros(channels, dog.NUM_COEFFS, dtype=F64)
    coeffs[:, dog.COEFF_NAMES.index(term)] = value
    return dog.make_params(coeffs, torch.full((channels,), sigma, dtype=F64), torch.full((channels,), gamma, dtype=F64))


@pytest.mark.parametrize("profile", dog.PROFILES)
def test_gaussian_term_sums_to_one(profile):
    g = dog.dog_filters(single("G", sigma=1.5), (15, 15), profile)[0]
    torch.testing.assert_close(g.sum(), torch.tensor(1.0, dtype=F64), atol=1e-5, rtol=0)
    assert g.argmax() == 7 * 15 + 7 and (g > 0).all()


def test_integrated_gaussian_mass_is_erf_exact():
    sigma, k = 0.4, 5
    g = dog.dog_filters(single("G", sigma=sigma), (k, k), "integrated")[0]
    mass_1d = math.erf(k / 2 / sigma / math.sqrt(2))
    torch.testing.assert_close(g.sum(), torch.tensor(mass_1d ** 2, dtype=F64), atol=1e-12, rtol=0)
    # centre tap: the Gaussian integrated over one pixel, in each direction
    centre_1d = math.erf(0.5 / sigma / math.sqrt(2))
    torch.testing.assert_close(g[2, 2], torch.tensor(centre_1d ** 2, dtype=F64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("profile", dog.PROFILES)
@pytest.mark.parametrize("k", [5, 7])
def test_jet_symmetries(profile, k):
    f = {name: dog.dog_filters(single(name, sigma=1.1), (k, k), profile)[0] for name in dog.COEFF_NAMES}
    tol = {"atol": 1e-12, "rtol": 0}
    for name in ("G", "Gxx", "Gyy", "surround"):
        torch.testing.assert_close(f[name], f[name].flip(0), **tol)
        torch.testing.assert_close(f[name], f[name].flip(1), **tol)
    torch.testing.assert_close(f["Gx"], -f["Gx"].flip(1), **tol)  # odd in x
    torch.testing.assert_close(f["Gx"], f["Gx"].flip(0), **tol)   # even in y
    torch.testing.assert_close(f["Gy"], -f["Gy"].flip(0), **tol)
    torch.testing.assert_close(f["Gxy"], -f["Gxy"].flip(0), **tol)
    torch.testing.assert_close(f["Gxy"], -f["Gxy"].flip(1), **tol)
    # x and y swap under transposition (square kernel, isotropic scale)
    torch.testing.assert_close(f["Gy"], f["Gx"].t(), **tol)
    torch.testing.assert_close(f["Gyy"], f["Gxx"].t(), **tol)
    torch.testing.assert_close(f["Gxy"], f["Gxy"].t(), **tol)
    torch.testing.assert_close(f["const"], torch.ones(k, k, dtype=F64), **tol)
    # Gx is the derivative of a Gaussian along x: negative right of the centre, zero on it
    c = k // 2
    assert f["Gx"][c, c + 1] < 0 < f["Gx"][c, c - 1]
    assert f["Gy"][c + 1, c] < 0 < f["Gy"][c - 1, c]
    assert abs(float(f["Gx"][c, c])) < 1e-15
    assert f["Gxx"][c, c] < 0  # second derivative of a bump: negative at the peak


def test_integrated_derivatives_telescope_to_zero():
    # integrated first/second derivatives sum (over a wide kernel) to ~0
    for name in ("Gx", "Gy", "Gxx", "Gyy", "Gxy"):
        f = dog.dog_filters(single(name, sigma=1.2), (17, 17), "integrated")[0]
        assert abs(float(f.sum())) < 1e-8, name
        assert float(f.abs().max()) > 1e-2, name


def test_centre_surround_dog():
    coeffs = torch.zeros(1, dog.NUM_COEFFS, dtype=F64)
    coeffs[0, 0], coeffs[0, 6] = 1.0, -1.0  # on-centre: G - surround
    params = dog.make_params(coeffs, torch.tensor([1.0], dtype=F64), torch.tensor([0.5], dtype=F64))
    f = dog.dog_filters(params, (21, 21))[0]
    assert f[10, 10] > 0 and f[10, 14] < 0  # positive centre, negative ring
    assert abs(float(f.sum())) < 1e-6  # both terms have unit mass
    # the surround's scale is sigma / gamma
    surround = dog.dog_filters(single("surround", sigma=1.0, gamma=0.5), (21, 21))[0]
    wide = dog.dog_filters(single("G", sigma=2.0), (21, 21))[0]
    torch.testing.assert_close(surround, wide, atol=1e-6, rtol=1e-6)


def test_dog_filters_linear_in_coefficients():
    params = dog.make_params(torch.randn(4, 8, dtype=F64), torch.rand(4, dtype=F64) + 0.5,
                             torch.rand(4, dtype=F64) * 0.5 + 0.3)
    basis = dog.dog_basis(params, (5, 3))
    assert basis.shape == (4, 8, 5, 3)
    expected = (params[:, :8, None, None] * basis).sum(1)
    torch.testing.assert_close(dog.dog_filters(params, (5, 3)), expected, atol=1e-12, rtol=0)


def test_sigma_gamma_maps_round_trip_and_ranges():
    sigma = torch.tensor([0.15, 0.5, 1.0, 3.0, 30.0], dtype=F64)
    torch.testing.assert_close(dog.sigma_from_raw(dog.raw_from_sigma(sigma)), sigma, atol=1e-9, rtol=1e-9)
    gamma = torch.tensor([0.15, 0.3, 0.5, 0.9], dtype=F64)
    torch.testing.assert_close(dog.gamma_from_raw(dog.raw_from_gamma(gamma)), gamma, atol=1e-9, rtol=1e-9)
    raw = torch.linspace(-30, 30, 61, dtype=F64)
    assert (dog.sigma_from_raw(raw) > dog.SIGMA_MIN).all()
    g = dog.gamma_from_raw(raw)
    assert (g >= dog.GAMMA_MIN).all() and (g <= dog.GAMMA_MAX).all()
    assert (g.diff() >= 0).all() and (dog.sigma_from_raw(raw).diff() > 0).all()


def test_make_params_layout():
    coeffs = torch.arange(16, dtype=F64).reshape(2, 8)
    params = dog.make_params(coeffs, torch.tensor([0.7, 1.3], dtype=F64), torch.tensor([0.4, 0.6], dtype=F64))
    assert params.shape == (2, dog.NUM_PARAMS) == (2, 10)
    assert torch.equal(params[:, :8], coeffs)
    torch.testing.assert_close(dog.sigma_from_raw(params[:, dog.RHO]), torch.tensor([0.7, 1.3], dtype=F64))
    torch.testing.assert_close(dog.gamma_from_raw(params[:, dog.TAU]), torch.tensor([0.4, 0.6], dtype=F64))


def test_sampled_profile_is_point_samples():
    sigma = 0.9
    g = dog.dog_filters(single("G", sigma=sigma), (5, 5), "sampled")[0]
    t = torch.arange(5, dtype=F64) - 2
    p = torch.exp(-0.5 * (t / sigma) ** 2) / math.sqrt(2 * math.pi) / sigma
    torch.testing.assert_close(g, p[:, None] * p[None, :], atol=1e-12, rtol=0)


# ------------------------------------------------------------------ dog_jet bank, get_bank


@pytest.mark.parametrize("kernel_size", [3, 7, (3, 5)])
def test_dog_jet_bank(kernel_size):
    bank = dog_jet_bank(kernel_size)
    ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    assert bank.shape == (18, *ks) and bank.dtype == torch.float32
    torch.testing.assert_close(bank.flatten(1).norm(dim=1), torch.ones(18), atol=1e-6, rtol=0)
    # first block: the six jet functions at scale 0.5, in parameter order (G, Gx, Gy, ...)
    for i, name in enumerate(dog.COEFF_NAMES[:6]):
        f = dog.dog_filters(single(name, sigma=0.5), ks)[0]
        torch.testing.assert_close(bank[i].double(), f / f.norm(), atol=1e-6, rtol=0)
    assert dog_jet_bank(5, scales=(1.0,)).shape == (6, 5, 5)


def test_get_bank():
    assert torch.equal(get_bank("master8", (5, 5)), master8(5))
    assert torch.equal(get_bank("dog_jet", (3, 3)), dog_jet_bank(3))
    custom = torch.randn(4, 3, 5)
    assert get_bank(custom, (3, 5)) is custom
    with pytest.raises(ValueError, match="bank:"):
        get_bank("nope", (3, 3))
    with pytest.raises(ValueError, match="bank:"):
        get_bank(torch.randn(4, 3, 3), (5, 5))


# ------------------------------------------------------------------ fitting


def test_cosine():
    a = torch.randn(3, 5, 5, dtype=F64)
    torch.testing.assert_close(cosine(a, 2 * a), torch.ones(3, dtype=F64))
    torch.testing.assert_close(cosine(a, -a), -torch.ones(3, dtype=F64))
    e1, e2 = torch.zeros(1, 4, dtype=F64), torch.zeros(1, 4, dtype=F64)
    e1[0, 0], e2[0, 1] = 1, 1
    torch.testing.assert_close(cosine(e1, e2), torch.zeros(1, dtype=F64))
    z = torch.zeros(2, 3, 3, dtype=F64)
    torch.testing.assert_close(cosine(z, z), torch.ones(2, dtype=F64))


@pytest.mark.parametrize("profile", dog.PROFILES)
@pytest.mark.parametrize("k", [5, 7])
def test_fit_dog_recovers_planted_filters(profile, k):
    torch.manual_seed(3)
    c = 6
    planted = dog.make_params(torch.randn(c, 8, dtype=F64), torch.linspace(0.6, 1.8, c, dtype=F64),
                              torch.linspace(0.3, 0.8, c, dtype=F64))
    clean = dog.dog_filters(planted, (k, k), profile)
    rms = clean.flatten(1).norm(dim=1) / k
    noisy = clean + 0.02 * rms[:, None, None] * torch.randn_like(clean)
    params, fit_cos = fit_dog(noisy, profile)
    assert params.shape == (c, 10) and params.dtype == F64 and fit_cos.shape == (c,)
    fitted = dog.dog_filters(params, (k, k), profile)
    torch.testing.assert_close(fit_cos, cosine(fitted, noisy), atol=1e-9, rtol=0)
    assert cosine(fitted, clean).min() > 0.995


def test_fit_dog_exact_on_noiseless_filters():
    planted = dog.make_params(torch.randn(4, 8, dtype=F64), torch.tensor([0.7, 1.0, 1.3, 0.5], dtype=F64),
                              torch.tensor([0.4, 0.5, 0.6, 0.7], dtype=F64))
    _, fit_cos = fit_dog(dog.dog_filters(planted, (5, 5)))
    assert fit_cos.min() > 0.9999


@pytest.mark.parametrize("bank_name,k", [("master8", 7), ("master8", 3), ("dog_jet", 5)])
@pytest.mark.parametrize("with_offset", [False, True])
def test_fit_bank_exact_in_span(bank_name, k, with_offset):
    bank = get_bank(bank_name, (k, k)).double()
    coeffs = torch.randn(5, bank.shape[0], dtype=F64)
    offset = torch.randn(5, dtype=F64) if with_offset else None
    filters = bank_filters(bank, coeffs, offset)
    fitted_coeffs, fitted_offset, cos = fit_bank(filters, bank, offset=with_offset)
    torch.testing.assert_close(cos, torch.ones(5, dtype=F64), atol=1e-9, rtol=0)
    torch.testing.assert_close(bank_filters(bank, fitted_coeffs, fitted_offset), filters, atol=1e-5, rtol=1e-5)
    if bank_name == "master8" and k == 7:  # a linearly independent bank: the coefficients themselves
        torch.testing.assert_close(fitted_coeffs, coeffs, atol=1e-5, rtol=1e-5)
        if with_offset:
            torch.testing.assert_close(fitted_offset, offset, atol=1e-5, rtol=1e-5)
    assert (fitted_offset is None) == (not with_offset)


def test_fit_bank_select_picks_the_right_filter():
    bank = master8(5, dtype=F64)
    assignment = torch.tensor([6, 0, 3, 3, 1])
    scale = torch.tensor([2.0, -1.0, 0.5, 3.0, -0.25], dtype=F64)
    filters = bank[assignment] * scale[:, None, None] + 0.1
    coeffs, offset, cos = fit_bank(filters, bank, offset=True, select=True)
    assert torch.equal(coeffs.abs().argmax(1), assignment)
    assert ((coeffs != 0).sum(1) == 1).all()
    torch.testing.assert_close(coeffs.sum(1), scale, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(offset, torch.full((5,), 0.1, dtype=F64), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cos, torch.ones(5, dtype=F64), atol=1e-9, rtol=0)
    # out of span: a filter that mixes two bank filters is not fitted exactly by one
    mixed = (bank[0] + bank[4]).unsqueeze(0)
    _, _, cos = fit_bank(mixed, bank, select=True)
    assert cos.item() < 0.9
