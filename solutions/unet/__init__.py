"""The UNet lab: your code. Modules: unet (DoubleConv, Down, Up, UNet), losses (Dice, BCE),
hybrid (Swin and ConvNeXt encoders with a UNet decoder), swin and convnext (given: the swin_cnn
lab's reference), summary (layer tables and model graphs), train."""
