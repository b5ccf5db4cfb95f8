"""The torch definitions of every network, shared by training and the fine stage's torch path.

    registry        every architecture by name (`abdoseg architectures` prints the table: table, flops)
    cobra_unet      the coarse whole-scan 3D U-Net (COBRA layout), the shipped FLARE21/FLARE22 network
    fine_unet       the fine stage's 3D U-Net (nnU-Net style), and the network a fine card names
    vgg13_unet_ds, nnunet2d, hrnet48_ocr   the three 2D systems
    onnx_export     a 2D network as ONNX, for the "slices" cards

Importing this package imports nothing; each module imports torch.
"""
