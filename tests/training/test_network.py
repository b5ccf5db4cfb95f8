"""The network: exact parameter count of the published layout, shapes, fully convolutional."""
import torch

from abdoseg.networks.cobra_unet import EXPECTED_PARAMETERS, CobraUNet, count_parameters


def test_parameter_count_is_the_published_436982():
    assert count_parameters(CobraUNet()) == EXPECTED_PARAMETERS == 436_982


def test_output_has_six_classes_on_the_input_grid_for_crops_and_channels_last():
    model = CobraUNet().eval()
    x = torch.rand(2, 2, 16, 32, 48)
    with torch.no_grad():
        y = model(x)
        y_cl = model.to(memory_format=torch.channels_last_3d)(x.contiguous(memory_format=torch.channels_last_3d))
    assert y.shape == (2, 6, 16, 32, 48)
    torch.testing.assert_close(y, y_cl, atol=1e-4, rtol=1e-4)


def test_input_stage_halves_each_axis_like_the_layout():
    stem_out = CobraUNet().stem(torch.rand(1, 2, 96, 192, 192))
    assert stem_out.shape == (1, 16, 48, 96, 96)
