from torch import nn

from slimtune.models.surgery import unwrap


class Wrapper(nn.Module):
    def __init__(self, base_layer):
        super().__init__()
        self.base_layer = base_layer

    def forward(self, x):
        return self.base_layer(x) + 1


def test_unwrap_removes_stacked_wrappers_down_to_the_base_layer():
    linear = nn.Linear(3, 3)
    model = nn.Sequential(Wrapper(Wrapper(linear)), nn.ReLU())
    unwrap(model)
    assert model[0] is linear
