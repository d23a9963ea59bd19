"""Train torchvision ConvNeXt / ResNet50 classifiers on medical images."""
