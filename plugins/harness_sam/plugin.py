"""Registration of the optimizers and presets of ``harness_sam`` (cheap to import: no torch).

Paper files (shared/papers/): 003 = SAM (Foret et al.), 004 = GSAM (Zhuang et al.), 000 = LookSAM /
LayerSAM (Liu et al.), 001 = AE-SAM (Jiang et al.), 002 = nuSAM (Pethick et al.).
"""

from __future__ import annotations

from harness import OptimizerSpec, PresetSpec, hookimpl

SAM_PAPER = "003_dc502e6d0d8ca36d.txt (SAM), Alg. 1, eq. 2-3, App. C.5, Sec. 4.1"
#: Where each paper describes its non-SAM baseline, the base optimizer alone (ERM): not SAM's algorithm.
ERM_PAPER = (
    "the non-SAM baseline of each paper: 003 (SAM) Sec. 3.1, Table 1 ('SGD', given twice the epochs, the better "
    "of 1x and 2x reported) and Sec. 3.3, Table 4; 001 (AE-SAM) Sec. 4.1 ('Baselines: (i) ERM'), Tables 1-3; "
    "004 (GSAM) Sec. 6.1, Table 1 ('Vanilla'); 000 (LookSAM) Sec. 4.2, Table 1 and App. A.3, Table 7 ('AdamW'); "
    "002 (nuSAM) Sec. 5.1, Tables 2-3 ('AdamW')"
)
GSAM_PAPER = "004_c79f6670b818170d.txt (GSAM), Alg. 1, eq. 4-6, Table 4"
LOOKSAM_PAPER = "000_821cd26b06e61c4d.txt (LookSAM), Alg. 1-3, eq. 4 and 7, Tables 10-11"
AESAM_PAPER = "001_543051aac35e9f16.txt (AE-SAM), Alg. 1, eq. 4-5, Sec. 4"
NUSAM_PAPER = "002_aa5e854e0246be55.txt (nuSAM), Alg. 1-2, eq. 8a-8b, App. C.1, Sec. 5.1.1"
# nuSAM's paper trains ViTs and MLP-Mixers only (seed_nusam.md 1); on any other model a suite states
# an ``extension`` (harness/suite/domains.py).
NUSAM_MODELS = ("vit-cifar", "mixer-cifar")
ESAM_PAPER = (
    "Du, Yan, Feng, Zhou, Zhen, Goh, Tan, Efficient Sharpness-aware Minimization for Improved Training of "
    "Neural Networks, ICLR 2022 (arXiv 2110.03141), Alg. 1, Sec. 3.1-3.2; as the baseline of 001 (AE-SAM), Tables 1-3"
)
SAMON_PAPER = (
    "Mueller, Vlaar, Rolnick, Hein, Normalization Layers Are All That Sharpness-Aware Minimization Needs, "
    "NeurIPS 2023 (arXiv 2306.04226); as the baseline of 002 (nuSAM), Sec. 5, 5.1.1, Tables 2-4 and 12"
)

FSAM_PAPER = (
    "Li, Zhou, He, Cheng, Huang, Friendly Sharpness-Aware Minimization, CVPR 2024 (arXiv 2403.12350), Algorithm 1 "
    "(m_t, d_t = g_t - sigma m_t); reference code github.com/nblt/F-SAM (utils.py FriendlySAM, run.sh)"
)
MSAM_PAPER = (
    "Becker, Altrock, Risse, Momentum-SAM: Sharpness Aware Minimization without Computational Overhead, 2024 "
    "(arXiv 2401.12033); reference code github.com/MarlonBecker/MSAM (optimizer/msam.py, adamW_msam.py, "
    "configs/default.ini: rho = 3)"
)
VASSO_PAPER = (
    "Li, Giannakis, Enhancing Sharpness-Aware Optimization Through Variance Suppression, NeurIPS 2023 "
    "(arXiv 2309.15639), Algorithm 1 (d_t = (1 - theta) d_{t-1} + theta g_t); reference code "
    "github.com/BingcongLi/VaSSO (solver/vasso.py, configs/defaulf_cfg.py: theta = 0.9)"
)

SAM_OPTIONS = {
    "norm": "l2",
    "adaptive": False,
    "eta": 0.01,
    "adaptive_params": "all",
    "layerwise": False,
    "trust_ratio": "printed",
    "zero_weight_ratio": 1.0,
    "normalize": True,
    "direction": "gradient",
    "m": 0,
    "seed": 0,
    "eps": 1e-12,
}
#: Parameters added after the first release (their defaults keep earlier run ids: ``Spec.later_params``).
SAM_LATER = ("zero_weight_ratio", "adaptive_params")
SAM_CHOICES = {
    "norm": ("l2", "linf"),
    "direction": ("gradient", "random"),
    "trust_ratio": ("printed", "inverse"),
    "adaptive_params": ("all", "weights"),
}

LAMB = {"name": "lamb", "lr": 0.01, "weight_decay": 0.1}  # LookSAM Table 11 (batch 4096)
ADAMW = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05}


@hookimpl
def register_optimizers() -> list[OptimizerSpec]:
    return [
        OptimizerSpec(
            name="erm",
            factory="harness_sam.erm:ERM",
            description="Empirical risk minimization: the base optimizer alone, one gradient evaluation per step",
            paper=ERM_PAPER,
        ),
        OptimizerSpec(
            name="sam",
            factory="harness_sam.sam:SAM",
            defaults={**SAM_OPTIONS, "perturb": "all", "normalization_pattern": ""},
            choices={**SAM_CHOICES, "perturb": ("all", "normalization")},
            later_params=(*SAM_LATER, "perturb", "normalization_pattern"),
            description="SAM: gradient at w + e, e from an l2/linf ball, ASAM, layer-wise, random, per-m "
            "or on the normalization layers only (SAM-ON)",
            paper=f"{SAM_PAPER}; SAM-ON: {SAMON_PAPER}",
        ),
        OptimizerSpec(
            name="gsam",
            factory="harness_sam.gsam:GSAM",
            defaults={"alpha": 0.01, **{k: v for k, v in SAM_OPTIONS.items() if k != "m"}},
            choices=SAM_CHOICES,
            later_params=SAM_LATER,
            description="GSAM: update g_p - alpha g_perp, ascent along the clean gradient orthogonal to g_p",
            paper=GSAM_PAPER,
        ),
        OptimizerSpec(
            name="looksam",
            factory="harness_sam.looksam:LookSAM",
            defaults={"alpha": 0.7, **{k: v for k, v in SAM_OPTIONS.items() if k != "m"}},
            choices=SAM_CHOICES,
            later_params=SAM_LATER,
            description="LookSAM: reuse the flatness direction g_v between SAM steps (one evaluation)",
            paper=LOOKSAM_PAPER,
        ),
        OptimizerSpec(
            name="esam",
            factory="harness_sam.esam:ESAM",
            defaults={"beta": 0.6, "gamma": 0.5, "seed": None, "eps": 1e-12},
            description="ESAM: SAM perturbing each tensor with probability beta (scaled 1/beta), its second "
            "pass on the gamma fraction of the batch whose loss rises most",
            paper=ESAM_PAPER,
        ),
        OptimizerSpec(
            name="fsam",
            factory="harness_sam.fsam:FriendlySAM",
            defaults={"sigma": 1.0, "lmbda": 0.95, "form": "paper", "eps": 1e-12},
            choices={"form": ("paper", "code")},
            description="Friendly SAM: perturb along g - sigma m, the batch gradient minus its EMA m (the "
            "full-gradient estimate), normalized to rho",
            paper=FSAM_PAPER,
        ),
        OptimizerSpec(
            name="msam",
            factory="harness_sam.momentum_sam:MomentumSAM",
            defaults={"buffer": "auto", "eps": 1e-12},
            choices={"buffer": ("auto", "momentum_buffer", "exp_avg")},
            description="Momentum-SAM: the step's one gradient at w - rho v / ||v||, v the base optimizer's "
            "momentum; no second pass (StepInfo.perturbed is false)",
            paper=MSAM_PAPER,
        ),
        OptimizerSpec(
            name="vasso",
            factory="harness_sam.vasso:VaSSO",
            defaults={"theta": 0.9, "init": "gradient", "eps": 1e-12},
            choices={"init": ("gradient", "zero")},
            description="VaSSO: perturb along d = (1 - theta) d + theta g, a variance-suppressed gradient EMA, "
            "normalized to rho",
            paper=VASSO_PAPER,
        ),
        OptimizerSpec(
            name="nusam",
            factory="harness_sam.nusam:NuSAM",
            defaults={
                "power_iterations": 1,
                "tau": 1e-12,
                "normalized": False,
                "exclude": ["embed", "pos_embed", "cls_token"],
                "include_conv": False,
                "seed": None,
                "refresh_during_delay": False,
            },
            later_params=("refresh_during_delay",),
            description="nuSAM: rank-1 nuclear-norm perturbation per weight matrix, no weight copy",
            paper=NUSAM_PAPER,
        ),
    ]


def _preset(
    name: str,
    optimizer: str,
    scheduler: str,
    scheduler_params: dict,
    description: str,
    paper: str,
    optimizer_params: dict | None = None,
    base_optimizer: dict | None = None,
    models: tuple[str, ...] = (),
) -> PresetSpec:
    return PresetSpec(
        name=name,
        optimizer=optimizer,
        scheduler=scheduler,
        optimizer_params=optimizer_params or {},
        scheduler_params=scheduler_params,
        base_optimizer=base_optimizer,
        description=description,
        paper=paper,
        models=models,
    )


@hookimpl
def register_presets() -> list[PresetSpec]:
    return [
        _preset("erm", "erm", "never", {}, "Baseline: the base optimizer, no perturbation", ERM_PAPER),
        _preset(
            "sam",
            "sam",
            "constant",
            {"rho": 0.05},
            "SAM, rho=0.05 ('a solid default value')",
            "003, Sec. 3 and App. C.3",
        ),
        _preset(
            "sam-pinf",
            "sam",
            "constant",
            {"rho": 0.005},
            "SAM with the p=inf ball, e = rho sign(g); rho is per weight, so much smaller than l2's "
            "(the paper sweeps rho per p and gives no value: sweep it)",
            "003, App. C.5",
            optimizer_params={"norm": "linf"},
        ),
        _preset(
            "asam",
            "sam",
            "constant",
            {"rho": 0.5},
            "ASAM (Kwon et al.): T_w = |w| + 0.01; rho 10x SAM's, as GSAM's paper runs it",
            "004, Sec. 5 and B.3",
            optimizer_params={"adaptive": True, "eta": 0.01},
        ),
        _preset(
            "random-sam",
            "sam",
            "constant",
            {"rho": 0.05},
            "Control: perturb along a random Gaussian direction of norm rho",
            "003, App. C.5; 002, Sec. 4",
            # seed None: the directions come from the run seed (component_seed). The sam optimizer's own
            # default stays 0 so that the run ids of every gradient-direction SAM run are unchanged.
            optimizer_params={"direction": "random", "seed": None},
        ),
        _preset(
            "sam-k",
            "sam",
            "periodic",
            {"rho": 0.05, "k": 5},
            "SAM every k=5 steps, the base optimizer on the others",
            "000, Sec. 3.1 (SAM-k baseline)",
        ),
        _preset(
            "ss-sam",
            "sam",
            "bernoulli",
            {"rho": 0.05, "p": 0.5},
            "SS-SAM: SAM or ERM by a Bernoulli(0.5) draw per step",
            "001, Sec. 2 (SS-SAM, p=0.5)",
        ),
        _preset(
            "ae-sam",
            "sam",
            "adaptive",
            {"rho": 0.05, "lambda1": -1.0, "lambda2": 1.0},
            "AE-SAM: SAM when ||g||^2 >= mu_t + c_t sigma_t, c_t from 1 to -1 (about 50% SAM)",
            AESAM_PAPER + ", Table 1 settings",
        ),
        _preset(
            "looksam",
            "looksam",
            "periodic",
            {"rho": 0.05, "k": 5},
            "LookSAM, k=5, alpha=0.7",
            LOOKSAM_PAPER,
            optimizer_params={"alpha": 0.7},
        ),
        _preset(
            "ae-looksam",
            "looksam",
            "adaptive",
            {"rho": 0.05, "lambda1": 0.0, "lambda2": 2.0},
            "AE-LookSAM: LookSAM's reuse with AE-SAM's policy, lambda=(0, 2) (about 20% SAM)",
            AESAM_PAPER + ", B.6",
            optimizer_params={"alpha": 0.7},
        ),
        _preset(
            "layersam",
            "sam",
            "constant",
            {"rho": 1.0},
            "LayerSAM: rho (||w_i||/||g_i||) sign(g_i) per tensor, LAMB base, rho=1.0",
            "000, Alg. 3, Table 11",
            optimizer_params={"norm": "linf", "layerwise": True},
            base_optimizer=LAMB,
        ),
        _preset(
            "look-layersam",
            "looksam",
            "periodic",
            {"rho": 1.0, "k": 5},
            "Look-LayerSAM: LookSAM with the layer-wise perturbation, LAMB base, k=5, alpha=0.7",
            "000, Alg. 2, Table 11",
            optimizer_params={"norm": "linf", "layerwise": True, "alpha": 0.7},
            base_optimizer=LAMB,
        ),
        _preset(
            "gsam",
            "gsam",
            "lr_linked",
            {"rho_max": 0.04, "rho_min": 0.02},
            "GSAM, ResNet class of Table 4: alpha=0.01, rho from 0.04 to 0.02 with the lr",
            GSAM_PAPER,
            optimizer_params={"alpha": 0.01},
        ),
        _preset(
            "gsam-vit",
            "gsam",
            "lr_linked",
            {"rho_max": 0.6, "rho_min": 0.0},
            "GSAM, ViT-S/32 row of Table 4: alpha=0.4, rho from 0.6 to 0, AdamW base",
            GSAM_PAPER,
            optimizer_params={"alpha": 0.4},
            base_optimizer={"name": "adamw", "lr": 3e-3, "weight_decay": 0.3},
        ),
        _preset(
            "nusam",
            "nusam",
            "delayed",
            {"fraction": 0.1, "inner": "constant", "inner_params": {"rho": 0.02}},
            "nuSAM: rank-1 perturbation per matrix, switched on after 10% of training, AdamW base "
            "rho=0.02 (the fine-tuning default, seed_nusam.md 6.3; from-scratch values were lost)",
            NUSAM_PAPER,
            base_optimizer=ADAMW,
            models=NUSAM_MODELS,
        ),
        _preset(
            "esam",
            "esam",
            "constant",
            {"rho": 0.05},
            "ESAM: SWP beta=0.6, SDS gamma=0.5, rho=0.05 every step (the reference code's CIFAR commands; "
            "AE-SAM, which reports it, states no settings)",
            ESAM_PAPER,
        ),
        _preset(
            "fsam",
            "fsam",
            "constant",
            {"rho": 0.05},
            "F-SAM: SAM along the batch gradient minus its EMA, sigma=1, lambda=0.95 (the reference code's "
            "command line); rho=0.05, SAM's (the code runs SAM and F-SAM at one rho)",
            FSAM_PAPER,
            optimizer_params={"sigma": 1.0, "lmbda": 0.95},
        ),
        _preset(
            "msam",
            "msam",
            "constant",
            {"rho": 3.0},
            "Momentum-SAM: one gradient per step at w - rho v/||v||, rho=3 (the reference code's SGD and AdamW "
            "commands)",
            MSAM_PAPER,
        ),
        _preset(
            "vasso",
            "vasso",
            "constant",
            {"rho": 0.05},
            "VaSSO: SAM along d = 0.1 d + 0.9 g (theta=0.9, the reference code's default), rho=0.05 (its "
            "CIFAR-10 command's default)",
            VASSO_PAPER,
            optimizer_params={"theta": 0.9},
        ),
        _preset(
            "sam-on",
            "sam",
            "constant",
            {"rho": 0.05},
            "SAM-ON: SAM perturbing only the normalization layers' weights and biases, every parameter "
            "updated; AdamW base, no delay (002 Sec. 5.1.1, Table 12); rho=0.05, the top of 002's GLUE grid "
            "{0.01, 0.02, 0.05} (the vision rho sweeps were lost: sweep it)",
            SAMON_PAPER,
            optimizer_params={"perturb": "normalization"},
            base_optimizer=ADAMW,
        ),
    ]
