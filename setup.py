from setuptools import find_packages, setup

setup(
    name="lightweight-seg",
    version="0.1.0",
    description="Small, fast U-Net segmentation on the CPU, from DICOM to DICOM-SEG (a MONAI plugin and bundle)",
    packages=find_packages(include=["lightweight_nets", "lightweight_nets.*"])
    + find_packages("apps", include=["lightweight_seg", "lightweight_seg.*"]),
    package_dir={"lightweight_seg": "apps/lightweight_seg"},
    python_requires=">=3.11",
    install_requires=["torch==2.13.0", "monai>=1.5", "pytorch-lightning>=2.5", "numpy", "scipy", "scikit-image"],
    entry_points={"console_scripts": ["lightweight-nets-profile=lightweight_nets.profile:main"]},
)
