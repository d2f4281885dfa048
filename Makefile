# One command per paper table. SCALE=paper (default: the papers' settings), cpu (the papers'
# 100-image sample with a C&W budget that fits 2 CPU cores) or ci (tiny regression scale).
PYTHON ?= python
SCALE ?= paper
ATTACK = $(PYTHON) scripts/attack.py -m scale=$(SCALE) $(ATTACK_EXTRA)
TABLE = $(PYTHON) scripts/table.py scale=$(SCALE)

.PHONY: install test smoke lint reproduce-all reproduce-he2017-squeezing \
        reproduce-he2017-specialists reproduce-attack-engine reproduce-cw2017 reproduce-tramer2017 reproduce-adam2018 \
        reproduce-adam2018-table1 \
        tramer2017-transfer tramer2017-ensemble train-tramer2017 \
        train-mnist train-cifar10

# Installs the package and everything it needs (torch 2.14.1 / torchvision 0.29.1 included).
# Every target that runs code depends on the stamp, so a fresh clone installs on first use.
STAMP := .make-installed

$(STAMP): pyproject.toml
	$(PYTHON) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -m pip install -e ".[dev]"
	touch $@

install:
	rm -f $(STAMP)
	$(MAKE) $(STAMP)

# Unit tests on the shipped MNIST subset plus the CI-scale golden regression on the real data
# (ADVREPRO_DATA, default ../shared/data; skipped with a reason where it is absent).
test: $(STAMP)
	$(PYTHON) -m pytest -q -p no:cacheprovider --durations=10

# Small-subset regression: CI-scale Table 1 and Table 3 cells, tables written under outputs/ci/.
smoke: $(STAMP)
	$(PYTHON) scripts/attack.py -m scale=ci experiment=he2017/table1 defense.bits=1,8
	$(PYTHON) scripts/table.py scale=ci table=he2017/table1
	$(PYTHON) scripts/attack.py -m scale=ci experiment=he2017/table3
	$(PYTHON) scripts/table.py scale=ci table=he2017/table3

lint: $(STAMP)
	$(PYTHON) -m ruff check src scripts tests

train-mnist: $(STAMP)
	$(PYTHON) scripts/train.py scale=$(SCALE) dataset=mnist model=cw_mnist train=mnist

train-cifar10: $(STAMP)
	$(PYTHON) scripts/train.py scale=$(SCALE) dataset=cifar10 model=metzen_resnet_cpu train=cifar10

# he2017 (primary paper) ---------------------------------------------------------------------
# reproduce-table-1 ... reproduce-table-4: the sweep of conf/experiment/he2017/tableN.yaml, then
# the table of conf/table/he2017/tableN.yaml.
reproduce-table-%: $(STAMP)
	@test -f conf/experiment/he2017/table$*.yaml || { echo "he2017 has no table $*" >&2; exit 2; }
	$(ATTACK) experiment=he2017/table$*
	$(TABLE) table=he2017/table$* 'command="make reproduce-table-$* SCALE=$(SCALE)"'

# he2017 §3.1-3.2 beyond Tables 1-2: the combined detector on MNIST, and CIFAR-10 squeezing;
# each joint detector also under zero knowledge (its detection and false-positive rates).
reproduce-he2017-squeezing: $(STAMP)
	$(ATTACK) experiment=he2017/squeezing_mnist
	$(ATTACK) experiment=he2017/squeezing_mnist defense=feature_squeezing threat=zero
	$(TABLE) table=he2017/squeezing_mnist 'command="make reproduce-he2017-squeezing SCALE=$(SCALE)"'
	$(ATTACK) experiment=he2017/squeezing_cifar
	$(ATTACK) experiment=he2017/squeezing_cifar defense=feature_squeezing_cifar threat=zero
	$(TABLE) table=he2017/squeezing_cifar 'command="make reproduce-he2017-squeezing SCALE=$(SCALE)"'

# he2017 §4: the adaptive attack and zero-knowledge C&W on the specialists+1 ensemble, the
# undefended generalist (targeted and untargeted) and zero-knowledge FGSM, then the table.
reproduce-he2017-specialists: $(STAMP)
	$(ATTACK) experiment=he2017/specialists
	$(ATTACK) experiment=he2017/specialists defense=none threat=perfect targeted=true,false
	$(ATTACK) experiment=he2017/specialists threat=zero attack=fgsm targeted=false
	$(TABLE) table=he2017/specialists 'command="make reproduce-he2017-specialists SCALE=$(SCALE)"'

# The attack engine's reference numbers: C&W on the undefended MNIST (untargeted, targeted) and
# CIFAR-10 classifiers (he2017 Table 1 8-bit row, cw2017 §3.1, he2017 §3.1.1).
reproduce-attack-engine: $(STAMP)
	$(ATTACK) experiment=attack_engine/undefended_mnist
	$(ATTACK) experiment=attack_engine/undefended_cifar
	$(TABLE) table=attack_engine/undefended 'command="make reproduce-attack-engine SCALE=$(SCALE)"'

# Other papers ---------------------------------------------------------------------------------
# cw2017 on MNIST: Grosse, Gong, KDE and dropout under zero and perfect knowledge, the
# unsecured baseline, and limited-knowledge transfer between classifiers trained on halves;
# on CIFAR-10, Metzen's detector and KDE (§3.2, §5.2) and dropout uncertainty (§6.1) under
# zero and perfect knowledge. he2017 Table 3 attacks the CIFAR-10 detectors untargeted.
reproduce-cw2017: $(STAMP)
	$(ATTACK) experiment=cw2017/mnist defense=none threat=perfect
	$(ATTACK) experiment=cw2017/mnist
	$(ATTACK) experiment=cw2017/mnist defense=kde attack=cw_l2_two_phase threat=perfect
	$(TABLE) table=cw2017/mnist 'command="make reproduce-cw2017 SCALE=$(SCALE)"'
	$(ATTACK) experiment=cw2017/mnist_rounded
	$(TABLE) table=cw2017/mnist_rounded 'command="make reproduce-cw2017 SCALE=$(SCALE)"'
	$(ATTACK) experiment=cw2017/mnist_limited
	$(ATTACK) experiment=cw2017/mnist_limited defense=dropout attack.confidence=0
	$(TABLE) table=cw2017/mnist_limited 'command="make reproduce-cw2017 SCALE=$(SCALE)"'
	$(ATTACK) experiment=cw2017/mnist_new_methods
	$(ATTACK) experiment=cw2017/mnist_new_methods defense=hidden_pca threat=zero 'panel=[hidden_pca_first_stage]'
	$(TABLE) table=cw2017/mnist_new_methods 'command="make reproduce-cw2017 SCALE=$(SCALE)"'
	$(ATTACK) experiment=cw2017/cifar
	$(ATTACK) experiment=cw2017/cifar defense=none threat=perfect
	$(TABLE) table=cw2017/cifar 'command="make reproduce-cw2017 SCALE=$(SCALE)"'
	$(ATTACK) experiment=cw2017/cifar_dropout
	$(ATTACK) experiment=cw2017/cifar_dropout defense=none threat=perfect
	$(TABLE) table=cw2017/cifar_dropout 'command="make reproduce-cw2017 SCALE=$(SCALE)"'

reproduce-adam2018:
	@echo "$@: not implemented yet beyond Table 1 (make reproduce-adam2018-table1); nothing was run." >&2; exit 2

# adam2018 Table 1 (LeNet-VAE row): clean accuracy, undefended / deterministic / stochastic
# VAE defense; the same full-test cells hold the white-box FGS error at epsilon 0.3.
reproduce-adam2018-table1: $(STAMP)
	$(ATTACK) experiment=adam2018/mnist defense=none,adam_vae_deterministic,adam_vae_stochastic
	$(TABLE) table=adam2018/table1 'command="make reproduce-adam2018-table1 SCALE=$(SCALE)"'

reproduce-all: reproduce-table-1 reproduce-table-2 reproduce-table-3 reproduce-table-4 \
               reproduce-he2017-squeezing reproduce-he2017-specialists reproduce-attack-engine \
               reproduce-cw2017 reproduce-tramer2017

# tramer2017 (MNIST) -------------------------------------------------------------------------
# Every cell attacks the whole test set; the models are trained (once, cached) on first use.
TRAMER = $(ATTACK) experiment=tramer2017/mnist
TRAMER_TABLE = $(TABLE) 'command="make reproduce-tramer2017 SCALE=$(SCALE)"'
SOURCES = source=tramer_a,tramer_a_adv,tramer_b

# Tables 1, 2, 7, 8: FGSM and RAND+FGSM from A, A_adv, B to A, A_adv, B (diagonal = white box).
tramer2017-transfer: $(STAMP)
	$(TRAMER) model=tramer_a train=tramer_mnist,tramer_adv threat=transfer $(SOURCES) attack=fgsm,rand_fgsm
	$(TRAMER) model=tramer_b train=tramer_mnist threat=transfer $(SOURCES) attack=fgsm,rand_fgsm

# Table 4: A_adv and A_adv-ens at 6 and 12 epochs, white-box FGSM and attacks transferred from B;
# in-text: A_adv under FGSM with eps = 1 (§3.3).
tramer2017-ensemble: $(STAMP)
	$(TRAMER) train=tramer_adv,tramer_adv_ens train.epochs=6,12
	$(TRAMER) train=tramer_adv,tramer_adv_ens train.epochs=6,12 threat=transfer source=tramer_b attack=fgsm,ifgsm,rand_fgsm
	$(TRAMER) train=tramer_adv attack.epsilon=1.0

reproduce-tramer2017-table1 reproduce-tramer2017-table2 reproduce-tramer2017-table7 reproduce-tramer2017-table8: tramer2017-transfer
	$(TRAMER_TABLE) table=tramer2017/$(subst reproduce-tramer2017-,,$@)

reproduce-tramer2017-table4 reproduce-tramer2017-text: tramer2017-ensemble
	$(TRAMER_TABLE) table=tramer2017/$(subst reproduce-tramer2017-,,$@)

reproduce-tramer2017: tramer2017-transfer tramer2017-ensemble
	for t in table1 table2 table4 table7 table8 text; do $(TRAMER_TABLE) table=tramer2017/$$t || exit 1; done

# tramer2017 (MNIST): models A-D (Table 6), then A_adv and A_adv-ens at 6 and 12 epochs (§3.2,
# §5.2). Every model is cached; an interrupted training resumes from its last checkpoint.
TRAIN = $(PYTHON) scripts/train.py -m scale=$(SCALE) dataset=mnist $(TRAIN_EXTRA)
train-tramer2017: $(STAMP)
	$(TRAIN) model=tramer_d,tramer_b,tramer_a,tramer_c train=tramer_mnist
	$(TRAIN) model=tramer_a train=tramer_adv,tramer_adv_ens train.epochs=6,12
