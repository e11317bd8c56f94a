# ruff: noqa: E501  (a data table; CJK characters count double towards the line width)
"""The guard's detection rules (data for ``toolmesh.agent.guard``), English and Chinese.

Every rule runs on folded, lower-cased text (full-width forms and homoglyphs already
mapped to ASCII, so ``：`` is ``:``). ``anchors`` are plain substrings: a rule's regex
runs only when one of them occurs, which keeps a clean 2 KB scan in the tens of µs.
Weights: ≥ 0.7 is a confident signal on its own; 0.3-0.5 needs company to pass the
default threshold of 0.5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ThreatKind = Literal["instruction_override", "role_play", "template_injection", "delimiter_smuggling",
                     "encoded_payload", "exfiltration", "tool_instruction"]


@dataclass(frozen=True, slots=True)
class Rule:
    kind: ThreatKind
    weight: float
    rx: re.Pattern[str]
    anchors: tuple[str, ...]
    #: When this matches inside the hit, the weight becomes ``strong_weight`` (weight 0 = only then).
    strong: re.Pattern[str] | None = None
    strong_weight: float = 0.0


def _r(kind: ThreatKind, weight: float, pattern: str, anchors: str, strong: str | None = None,
       strong_weight: float = 0.0) -> Rule:
    return Rule(kind, weight, re.compile(pattern, re.S | re.M), tuple(a for a in anchors.split("|") if a),
                re.compile(strong, re.S) if strong else None, strong_weight)


# -- shared vocabularies ---------------------------------------------------------------------
_XV = (r"(?:reveal|show|print|display|output|repeat|tell|give|leak|dump|list|expose|share|copy|paste|echo|"
       r"write out|spell out|recite|disclose|send|what(?:'s|\s+is|\s+are|\s+were)|read (?:back|out)|provide|"
       r"return|translate|summari[sz]e|describe|paraphrase|rewrite|encode|read(?: me)?)")
_V = (r"(?:ignore|disregard|forget|overlook|override|bypass|neglect|abandon|discard|set aside|throw away|"
      r"do not follow|don't follow|dont follow|stop following|no longer follow|skip)")
_QS = (r"(?:all|every|your|previous|prior|above|earlier|preceding|former|original|initial|old|existing|system|"
       r"developer|safety|security|preset|default|foregoing|aforementioned|above-mentioned|of|the above|"
       r"everything|any and all|those|these|the previous|the prior|the system)")
_QW = r"(?:the|any|some)"
_N = (r"(?:instructions?|prompts?|rules?|directives?|guidelines?|guidance|commands?|orders?|programming|"
      r"policies|policy|restrictions?|constraints?|context|training|guardrails?|filters?|system message|"
      r"messages?|text above|limitations?|safeguards?|ethics|moral(?:s|ity)?)")
_AI = r"(?:ai|a\.i\.|assistant|llm|language model|chatbot|bot|model|agent|gpt|chatgpt|claude|copilot|system)"
_FREE = (r"(?:unrestricted|unfiltered|uncensored|jailbroken|evil|rogue|amoral|unethical|unlimited|unbound|"
         r"unchained|limitless|lawless|malicious|hacked|dan|free)")
_ZV = (r"(?:忽略|忽视|无视|不要理会|不用理会|别理会|不要管|别管|忘记|忘掉|忘了|抛开|抛弃|丢弃|绕过|推翻|"
       r"不再遵守|不要遵守|不必遵守|停止遵守|别遵守|违背|无需遵守|跳过)")
_ZQ = (r"(?:之前|以前|先前|此前|上面|上述|以上|前面|前述|原来|原有|原先|所有|全部|一切|系统|开发者|已有|"
       r"现有|给你的|你收到的|你被设定的|你的|您的|设定的|预设的?|默认的?)")
_ZN = (r"(?:指令|指示|提示词|提示语|系统提示|规则|设定|人设|约束|限制|命令|准则|规定|安全策略|安全限制|"
       r"政策|要求|规范|prompt|instructions?)")

RULES: tuple[Rule, ...] = (
    # -- instruction_override ------------------------------------------------------------------
    _r("instruction_override", 0.85, rf"\b{_V}\s+(?:(?:{_QS}|{_QW})\s+){{0,3}}(?:{_QS})\s+(?:(?:{_QS}|{_QW})\s+)"
       rf"{{0,3}}{_N}\b", "ignor|disregard|forget|overlook|overrid|bypass|neglect|abandon|discard|aside|throw|follow|skip"),
    _r("instruction_override", 0.45, rf"\b{_V}\s+{_QW}\s+{_N}\b",
       "ignor|disregard|forget|overlook|overrid|bypass|neglect|abandon|discard|aside|throw|follow|skip"),
    _r("instruction_override", 0.8, r"\b(?:ignore|disregard|forget)\s+(?:everything|all)\s+(?:(?:that\s+)?(?:you\s+"
       r"(?:were|have been)\s+told|above|before|(?:i|we)\s+said\s+before|prior|previously|so far))",
       "ignor|disregard|forget"),
    _r("instruction_override", 0.7, r"\b(?:ignore|disregard|forget)\s+(?:all\s+(?:of\s+)?)?(?:the\s+)?(?:above|"
       r"foregoing|preceding)\b", "ignor|disregard|forget"),
    _r("instruction_override", 0.8, r"\b(?:ignore|disregard|forget)\s+what(?:ever)?\s+you\s+(?:were|have been)\s+"
       r"(?:told|instructed|programmed|trained)", "ignor|disregard|forget"),
    _r("instruction_override", 0.45, r"\b(?:new|updated|revised|real|actual|true|additional|override|secret|hidden|"
       r"priority|admin|emergency)\s+(?:system\s+)?(?:instructions?|rules|directives?|task|orders?)\s*:",
       "instruction|rules|directive|task|order", strong=r"instruction|directive|system|(?:updated|revised|real|actual|true|additional|override|secret|"
       r"hidden|priority|admin|emergency)\s+(?:system\s+)?(?:rules|task|orders?)", strong_weight=0.6),
    _r("instruction_override", 0.7, r"\byour\s+(?:new|real|actual|true|only|updated|primary)\s+(?:task|goal|purpose|"
       r"instructions?|role|job|objective|mission|directive)\s+(?:is|are|will be|:)", "your new|your real|your actual|your true|your only|your updated|your primary"),
    _r("instruction_override", 0.55, r"\bfrom now on\b[,:]?\s*(?:you|your|ignore|always|only|respond|reply|answer|"
       r"act|never|do not|don't)", "from now on"),
    _r("instruction_override", 0.8, r"\b(?:the\s+)?(?:above|previous|prior|earlier|original|system)\s+(?:instructions?"
       r"|prompt|rules|messages?)\s+(?:is|are|was|were)\s+(?:fake|wrong|false|outdated|obsolete|void|cancell?ed|"
       r"revoked|a test|not real|no longer valid|invalid)", "above|previous|prior|earlier|original|system"),
    _r("instruction_override", 0.7, r"\b(?:override|bypass|disable|turn off|deactivate|circumvent|switch off)\s+"
       r"(?:all\s+(?:of\s+)?)?(?:your|the|any)?\s*(?:safety|security|content|moderation|ethical|ethics)\s*"
       r"(?:filters?|guardrails?|restrictions?|protocols?|safeguards?|policy|policies|rules|settings|checks)?",
       "overrid|bypass|disable|turn off|deactivat|circumvent|switch off"),
    _r("instruction_override", 0.7, r"\bbypass\s+(?:your|the|all|any)\s+(?:restrictions|guardrails|rules|filters|"
       r"limitations)", "bypass"),
    _r("instruction_override", 0.65, r"\bdecode\b.{0,60}?\b(?:and|then)\s+(?:follow|execute|obey|do|run|carry out|"
       r"perform|act on)\b", "decode"),
    _r("instruction_override", 0.7, r"\b(?:follow|execute|obey|carry out|act on)\s+(?:the\s+)?(?:decoded|hidden|"
       r"embedded|encoded|secret|following hidden)\s+(?:instructions?|text|message|commands?|payload)",
       "follow|execut|obey|carry|act on"),
    _r("instruction_override", 0.6, r"\b(?:do not|don't|never)\s+(?:tell|inform|alert|warn|notify)\s+the\s+"
       r"(?:user|customer|human)", "tell|inform|alert|warn|notify"),
    _r("instruction_override", 0.75, r"\b(?:these|this|the following|my)\s+(?:instructions?|message|command|rules?)\s+"
       r"(?:take|takes|has|have)\s+(?:top\s+|highest\s+)?(?:priority|precedence)", "priority|precedence"),
    _r("instruction_override", 0.85, rf"{_ZV}掉?\s*(?:你|您)?的?{_ZQ}的?[^。！？!?\n]{{0,10}}?{_ZN}", "忽略|忽视|无视|理会|不要管|别管|忘|"
       "抛|丢弃|绕过|推翻|遵守|违背|跳过"),
    _r("instruction_override", 0.4, rf"{_ZV}[^。！？!?\n]{{0,6}}?{_ZN}", "忽略|忽视|无视|理会|不要管|别管|忘|抛|丢弃|绕过|"
       "推翻|遵守|违背|跳过"),
    _r("instruction_override", 0.6, r"新的?(?:系统)?(?:指令|规则|任务|命令|要求)\s*[:是为]", "新指令|新的指令|新规则|新的规则|新任务|新的任务|新命令|新的命令|新要求|新的要求|新系统|新的系统"),
    _r("instruction_override", 0.7, r"你的新?(?:真正的?)?(?:任务|目标|指令|使命|职责)(?:现在)?(?:是|变成|改为|:)", "你的"),
    _r("instruction_override", 0.6, r"从(?:现在|此刻|今天)(?:开始|起)\s*[,，]?\s*(?:你|您)(?:必须|要|将|只|就|不再|只能|"
       r"应该|需要)", "从现在|从此刻|从今天"),
    _r("instruction_override", 0.7, r"以下(?:才是|是|为)(?:你的)?(?:真正|新|最新|最高优先级)的?(?:指令|规则|任务|命令)", "以下"),
    _r("instruction_override", 0.8, r"(?:以上|上面|之前|前面|原来)的?(?:所有)?(?:指令|规则|内容|设定|提示)(?:都|全部)?"
       r"(?:是假的|无效|作废|已失效|不算|失效|取消)", "无效|作废|失效|不算|假的|取消"),
    _r("instruction_override", 0.65, r"解码.{0,20}?(?:并|然后|再|后)(?:执行|照做|遵循|按照|服从)", "解码"),
    _r("instruction_override", 0.6, r"(?:不要|别|不得|切勿)(?:告诉|告知|通知|提醒)(?:用户|客户|顾客)", "不要|别|不得|切勿"),
    # proximity: a dismissal and a reference to the model's rules, in either order
    _r("instruction_override", 0.45, r"\b(?:ignore|disregard|forget|drop|scrap|scratch|abandon|discard|never mind|"
       r"put\s+(?:\w+\s+){0,3}aside|set\s+(?:\w+\s+){0,3}aside|to one side|no longer apply|not apply anymore|"
       r"suspended|revoked|void|overridden|cancell?ed)\b[^.!?\n]{0,40}?\b(?:instructions?|rules|guidance|guidelines|"
       r"directives?|prompt|programming|training|restrictions|constraints)\b|\b(?:instructions?|rules|guidance|"
       r"guidelines|directives?|prompt|programming|training|restrictions|constraints)\b[^.!?\n]{0,40}?\b(?:no longer "
       r"apply|to one side|aside|(?:are|is|were|have been)\s+(?:now\s+)?(?:suspended|revoked|void|overridden|cancell?ed|lifted|"
       r"removed|disabled))\b", "ignor|disregard|forget|drop|scrap|scratch|abandon|discard|never mind|aside|side|"
       "apply|suspend|revok|void|overrid|cancel|lifted|removed|disabled",
       strong=r"\byour\b|you were|you got|you've been|you have been|previous|prior|earlier|above|all\b|everything|"
       r"before|system|the shop|management", strong_weight=0.8),
    _r("instruction_override", 0.8, r"\b(?:everything|all|anything)\s+(?:(?:you\s+(?:were|have been)\s+told|said|"
       r"written)\s+)?(?:before|above|prior to)\s+(?:this|here|now)\b[^.!?\n]{0,30}?\b(?:is|are|was|were)\s+(?:void|"
       r"cancell?ed|invalid|null|irrelevant|obsolete|fake|a test|not real)", "before|above|prior"),
    _r("instruction_override", 0.8, r"\b(?:scratch|forget|erase|clear|wipe|delete|reset)\s+(?:everything|all)\s+"
       r"(?:that\s+)?you\s+(?:were|have been|'ve been)\s+(?:told|given|instructed)", "scratch|forget|erase|clear|wipe|"
       "delete|reset"),
    _r("instruction_override", 0.7, r"\b(?:system|admin|security|emergency|priority|developer|god)\s+override\b",
       "override"),
    _r("instruction_override", 0.8, rf"(?:放下|放一边|搁置|不算|作废|不用再?遵守|不必再?遵守|无需遵守|不要再?遵守|"
       rf"别再?遵守|丢掉|扔掉|抛开|无视|忽视|清空|删除|删掉|别再?按照?)[^。！？!?\n]{{0,12}}?{_ZN}",
       "放下|放一边|搁置|不算|作废|遵守|丢掉|扔掉|抛开|无视|忽视|清空|删除|删掉|别按|别再按"),
    _r("instruction_override", 0.45, rf"{_ZN}[^。！？!?\n]{{0,6}}?(?:都|全部|统统|全都|一律)?(?:不算|作废|失效|无效|清空|取消|"
       r"不再适用)", "不算|作废|失效|无效|清空|取消|适用", strong=r"之前|以前|先前|所有|你的|全部|统统|一切|都|全都|一律|原来|"
       r"上面|以上|前面", strong_weight=0.8),
    _r("instruction_override", 0.7, r"(?:之前|前面|上面|以上|刚才|原来)(?:说的|讲的|的话|的内容|的一切)?(?:都|全都|全部|统统)?"
       r"(?:不算|作废|无效|不作数)", "不算|作废|无效|不作数"),
    # -- role_play -----------------------------------------------------------------------------
    _r("role_play", 0.45, r"\byou\s+are\s+(?:now|no longer|from now on)\b(?:\s+(?:in\s+|an?\s+)?\w+){0,3}",
       "you are", strong=rf"\b{_FREE}\b|mode|jailbr|without|no (?:rules|limits|restrictions)", strong_weight=0.85),
    _r("role_play", 0.85, r"\bdo anything now\b|\bdan mode\b|\bstan mode\b|\bdude mode\b|\bevil confidant\b|"
       r"\banti-?gpt\b|\bbetter-?dan\b|\bopposite mode\b|\baim\s*\(always intelligent", "anything now|mode|evil|gpt|dan|aim"),
    _r("role_play", 0.55, r"\bpretend\s+(?:to\s+be|you(?:'re|\s+are)|that\s+you|you\s+have\s+no|to\s+have\s+no)",
       "pretend", strong=rf"\b{_FREE}\b|no (?:rules|restrictions|limits|filters)", strong_weight=0.85),
    _r("role_play", 0.8, rf"\b(?:act|behave|respond|answer|reply|talk|speak)\s+(?:as|like)\s+(?:an?\s+|my\s+|the\s+)?"
       rf"{_FREE}\b", "act|behave|respond|answer|reply|talk|speak"),
    _r("role_play", 0.75, r"\b(?:act|behave|respond)\s+as\s+(?:if|though)\s+you\s+(?:have|had|are|were)\s+(?:no|not|"
       r"free|unrestricted|without)", "as if|as though"),
    _r("role_play", 0.7, r"\b(?:developer|god|dan|jailbreak|jailbroken|unrestricted|evil|sudo|unfiltered|uncensored|"
       r"no-?filter|chaos)\s+mode\b", "mode"),
    _r("role_play", 0.4, r"\bjailbr(?:eak|oken|eaking)\b", "jailbr", strong=r"jailbroken|jailbreak (?:mode|prompt)",
       strong_weight=0.4),
    _r("role_play", 0.8, rf"\b(?:you|{_AI})\s+(?:is|are|now|will|have|has)?\s*(?:be\s+)?(?:jailbroken|freed|liberated|"
       r"unshackled|unchained)\b", "jailbroken|freed|liberated|unshackled|unchained"),
    _r("role_play", 0.75, r"\byou\s+(?:now\s+)?(?:have|has|are under|now have|no longer have)\s+(?:no|any)\s+"
       r"(?:more\s+|ethical\s+|moral\s+|content\s+|safety\s+)?"
       r"(?:restrictions|limitations|limits|filters|rules|guidelines|boundaries|ethics|morals|censorship)", "you"),
    _r("role_play", 0.8, rf"\b(?:an?\s+)?{_AI}\s+(?:with\s+no|without(?:\s+any)?|that\s+has\s+no|free\s+(?:of|from))\s+"
       r"(?:any\s+)?(?:restrictions|limitations|limits|filters|rules|guidelines|censorship|ethic|moral)",
       "with no|without|has no|free of|free from"),
    _r("role_play", 0.45, r"\b(?:without|free from|free of)\s+(?:any\s+)?(?:restrictions|censorship|ethical|moral|"
       r"content)\s*(?:filters|guidelines|limits|constraints|policies)?", "without|free"),
    _r("role_play", 0.4, r"\brole[- ]?play(?:ing)?\b|\blet'?s\s+play\s+a\s+(?:game|role)|\bstay\s+in\s+character\b",
       "role|play|character"),
    _r("role_play", 0.55, r"\bsimulate\s+(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|ai|chatbot|terminal|"
       r"linux|developer|different|evil|hypothetical)", "simulate"),
    _r("role_play", 0.6, r"\byou\s+will\s+now\s+(?:act|behave|respond|simulate|play|pretend|become|answer as)",
       "will now"),
    _r("role_play", 0.6, r"\byour\s+(?:new\s+)?(?:name|identity|persona|personality)\s+is\s+now\b|\byou\s+are\s+no"
       r"\s+longer\s+(?:an?\s+)?(?:ai|assistant|chatbot|bound|restricted|customer service)", "your|no longer"),
    _r("role_play", 0.85, r"你(?:现在|从现在起|从此|已经|将|就)*(?:是|成为|变成|扮演|化身)[^。！？!?\n]{0,8}?"
       r"(?:不受(?:任何)?(?:限制|约束|审查)|没有(?:任何)?(?:限制|约束|规则|底线)|无限制|无约束|越狱|邪恶|dan\b|"
       r"无审查|没有道德|无视规则|不受规则)", "你现在|你从|你已经|你将|你就|你是|你成为|你变成|你扮演|你化身"),
    _r("role_play", 0.5, r"\b(?:imagine|suppose|assume|pretend|picture|let'?s say)\s+(?:that\s+)?you(?:'re|\s+are|"
       r"\s+were)\s+(?:an?\s+|the\s+)?[^.!?\n]{0,40}", "imagine|suppose|assume|pretend|picture|say",
       strong=rf"\b{_FREE}\b|\bai\b|sandbox|escaped|no (?:rules|limits|restrictions|content polic)|zero|"
       r"without|hacker", strong_weight=0.8),
    _r("role_play", 0.6, r"\bswitch\s+(?:your\s+)?(?:personas?|roles?|characters?|personality)|\bnew\s+(?:persona|"
       r"character|personality)\b|\b(?:you(?:'re|\s+are)|become)\s+(?:'|\")?[a-z0-9]+(?:'|\")?,\s+(?:an?\s+)?"
       r"(?:version of you|assistant|ai|bot|model)\s+(?:that|who|which)\b", "switch|persona|character|become|you"),
    _r("role_play", 0.75, r"\b(?:answers?|responds?|does|says?)\s+(?:to\s+)?(?:everything|anything)\s+without\s+"
       r"(?:refusing|refusal|restrictions|question|limits|filters|hesitation)|\bnever\s+refuses?\b|\bobeys?\s+only\s+"
       r"me\b", "without|refus|obey"),
    _r("role_play", 0.55, r"\byou(?:'re|\s+are)\s+(?:now\s+)?(?:the|an?|my)\s+(?:\w+\s+){0,2}(?:ceo|owner|manager|"
       r"admin|administrator|boss|developer|supervisor|root|hacker)\b", "you"),
    _r("role_play", 0.5, r"以[^，。,!?！？\n]{1,12}的身份(?:回答|回复|说话|行事|和我)|假设你是|你(?:现在|就)?扮演的?是|"
       r"(?:进入|切换到?|换)(?:一个)?新?(?:的)?(?:角色|人设|身份)", "身份|假设|扮演|角色|人设",
       strong=r"越狱|无限制|不受限制|没有限制|老板|管理员|店长|经理|开发者|dan|黑客|从不拒绝|什么都", strong_weight=0.8),
    _r("role_play", 0.75, r"(?:什么都能|任何问题都)(?:回答|说)[^。！？\n]{0,8}?(?:从不|不会|绝不)拒绝|从不拒绝|只听我的|只服从我",
       "拒绝|只听|只服从"),
    _r("role_play", 0.45, r"越狱", "越狱", strong=r"越狱(?:版|模式|后的?(?:ai|助手|模型))", strong_weight=0.75),
    _r("role_play", 0.45, r"你现在(?:是|成为|变成)(?:了)?(?:一个|一名|一位)", "你现在"),
    _r("role_play", 0.55, r"假装(?:你是|成为|自己是|你没有|你不是|你可以)", "假装"),
    _r("role_play", 0.35, r"扮演(?:一个|一名|一位)|角色扮演", "扮演"),
    _r("role_play", 0.7, r"(?:开发者|越狱|上帝|无限制|无审查|dan|邪恶|调试|管理员|god|developer)\s*模式", "模式"),
    _r("role_play", 0.75, r"你(?:现在)?(?:已经)?(?:没有|不再有|不受|不必遵守)(?:任何)?(?:限制|约束|规则|审查|道德|过滤|"
       r"安全策略)", "你没有|你不再|你不受|你不必|你现在|你已经"),
    _r("role_play", 0.8, r"不受(?:任何)?(?:限制|约束|审查)的(?:ai|人工智能|助手|模型|机器人)", "不受"),
    _r("role_play", 0.7, r"你不再是(?:一个|一名)?(?:客服|助手|ai|机器人|人工智能|智能客服)", "你不再是"),
    _r("role_play", 0.55, r"你的(?:新)?(?:身份|名字|角色|人设)(?:现在)?(?:是|变成|改为)", "你的"),
    # -- template_injection --------------------------------------------------------------------
    _r("template_injection", 0.3, r"\{\{[^{}\n]{0,200}\}\}", "{{", strong=r"__\w+__|config|self\b|request|lipsum|"
       r"cycler|joiner|namespace|import|popen|subprocess|\bos\b|system|globals|builtins|eval|exec|instruction",
       strong_weight=0.85),
    _r("template_injection", 0.3, r"\{%[^%\n]{0,200}%\}", "{%", strong=r"import|popen|system|config|__|exec|eval",
       strong_weight=0.85),
    _r("template_injection", 0.85, r"\$\{(?:jndi|env|sys|java|lower|upper|date|ctx|main|bundle)\s*:", "${"),
    _r("template_injection", 0.85, r"<\|\s*(?:im_start|im_end|im_sep|system|user|assistant|endoftext|end|eot_id|"
       r"start_header_id|end_header_id|begin_of_text|end_of_text|eom_id|python_tag|fim_\w+|channel|message|start|"
       r"return|constrain|tool_call|tool_response|begin[▁_]of[▁_]sentence|end[▁_]of[▁_]sentence|"
       r"(?:tool|im)[▁_]\w+)\s*\|>", "<|"),
    _r("template_injection", 0.7, r"<\|[\w▁.-]{2,40}\|>", "<|"),
    _r("template_injection", 0.8, r"\[/?inst\]|<</?sys>>|</?(?:start_of_turn|end_of_turn)>|</?tool_call>"
       r"|\[/?(?:system|assistant)_?(?:prompt)?\]", "inst]|sys>>|of_turn|tool_call|[system|[/system|[assistant"),
    _r("template_injection", 0.4, r"^[ \t>*_]*(?:#{1,6}\s*)?\[?(?:system|sys|developer|system prompt|system message|"
       r"assistant|admin|administrator|root)\]?[ \t*_]*:[^\n]{0,40}", "system|sys|developer|assistant|admin|root",
       strong=r":\s*(?:you|ignore|disregard|always|never|from now|the assistant|the ai|new|override|important|"
       r"reveal|respond|reply|do not|forget|your|sure|ok|certainly|here|the user|grant|approve|all\b|must|"
       r"policy|mode)", strong_weight=0.8),
    _r("template_injection", 0.55, r"^\s*#{2,}\s*(?:instruction|instructions|system|response|new instructions?|"
       r"system prompt|assistant)\b\s*:?", "###", strong=r"instruction|system", strong_weight=0.7),
    _r("template_injection", 0.6, r"^\s*[\[【(]?\s*(?:系统|系统提示|系统消息|系统指令|管理员|开发者|管理员指令)\s*"
       r"[\]】)]?\s*:", "系统|管理员|开发者"),
    _r("template_injection", 0.55, r"[\[【]\s*(?:系统|系统消息|系统指令|系统提示|管理员指令|开发者指令|system)\s*[\]】]",
       "[|【"),
    # -- delimiter_smuggling -------------------------------------------------------------------
    _r("delimiter_smuggling", 0.75, r"</\s*(?:user|human|user_input|input|query|question|customer|instructions?|"
       r"context|document|data|tool_output|tool_result|untrusted[\w-]*|prompt|message)\s*>", "</"),
    _r("delimiter_smuggling", 0.7, r"<\s*(?:system|sys|assistant|developer|admin|instructions?|system_prompt|"
       r"im_start|new_instructions|override)(?:\s+[^>]{0,60})?\s*>", "<"),
    _r("delimiter_smuggling", 0.65, r"^[\s\-=#*\[<>(|]*(?:end of|begin|start of|beginning of)\s+(?:the\s+)?"
       r"(?:user(?:'s)?\s+)?(?:input|message|prompt|query|question|conversation|document|data|context|instructions?|"
       r"system prompt|system message|admin message|new instructions)[\s\-=#*\]<>)|]*$", "end of|begin|start of"),
    _r("delimiter_smuggling", 0.6, r"\b(?:user|customer)\s+(?:input|message|query)\s+(?:ends|ended|is over|stops)\s*"
       r"(?:here)?|\b(?:the\s+)?(?:real|actual|new|true)\s+(?:conversation|prompt|task|instructions?)\s+(?:starts|"
       r"begins?)\s+(?:here|now|below)", "input|message|query|real|actual|new|true"),
    _r("delimiter_smuggling", 0.7, r"```\s*\n\s*(?:#{1,6}\s*)?\[?(?:system|assistant|developer|new instructions?|"
       r"instructions?|系统|助手)\]?\s*:", "```"),
    _r("delimiter_smuggling", 0.65, r"```\s*(?:system|instructions?|prompt|assistant|developer|sysprompt)\b", "```"),
    _r("delimiter_smuggling", 0.65, r"^\s*(?:-{3,}|={3,}|\*{3,}|_{3,}|#{3,}|~{3,})\s*\n+\s*(?:#{1,6}\s*)?[\[【]?"
       r"(?:system|assistant|developer|admin|系统|管理员)[\]】]?\s*:", "---|===|***|___|###|~~~"),
    _r("delimiter_smuggling", 0.7, r"[-=*#~]{3,}\s*(?:system|系统|admin|管理员|developer|开发者)\s*(?:prompt|message|"
       r"instructions?|提示|消息|指令)?\s*[-=*#~]{3,}", "---|===|***|###|~~~"),
    _r("delimiter_smuggling", 0.7, r"</\s*(?:\w*[_-])?(?:user|human|customer|client)(?:[_-]?(?:input|query|message|turn|"
       r"prompt|question|text|content|request))?\s*>", "</"),
    _r("delimiter_smuggling", 0.45, r"<\s*[\w-]*(?:system|admin|assistant|developer|override|instruction)[\w-]*"
       r"(?:\s+[^>]{0,60})?\s*>", "<"),
    _r("delimiter_smuggling", 0.7, r"[\[(<【]\s*end\s+(?:of\s+)?(?:the\s+)?(?:user|customer|human|client|input)"
       r"(?:'s)?(?:\s+(?:input|message|query|turn))?\s*[\])>】]|^[\s\-=#*~_]*(?:end\s+of\s+(?:the\s+)?(?:user|customer|"
       r"client|human)(?:'s)?\s+(?:input|message|query|turn|request))[\s\-=#*~_]*$", "end"),
    _r("delimiter_smuggling", 0.65, r"\b(?:assistant|system|admin|developer|ai|model)\s+(?:instructions?|directives?|"
       r"override|prompt|note|orders)\s*:", "instruction|directive|override|prompt|note|order"),
    _r("delimiter_smuggling", 0.6, r"[\[【]\s*(?:用户|客户)?(?:输入|消息|问题)(?:结束|完毕)\s*[\]】]|^[\s\-—=*#~]*(?:用户|客户)"
       r"(?:输入|消息)(?:结束|完毕)[\s\-—=*#~]*$", "结束|完毕"),
    _r("delimiter_smuggling", 0.5, r"\"role\"\s*:\s*\"(?:system|developer)\"", "\"role\""),
    _r("delimiter_smuggling", 0.6, r"(?:用户|客户)(?:的)?(?:输入|消息|问题)(?:到此|到这里)?(?:结束|完毕)", "结束|完毕"),
    _r("delimiter_smuggling", 0.7, r"以下(?:是|为)(?:来自)?(?:系统|管理员|开发者|官方)的?(?:消息|指令|提示|命令)", "以下"),
    # -- exfiltration --------------------------------------------------------------------------
    _r("exfiltration", 0.8, rf"\b{_XV}\b[^.!?\n]{{0,30}}?(?:system prompt(?!s)|system message|initial prompt|"
       r"original prompt|hidden prompt|secret prompt|pre-?prompt|(?:initial|original|hidden|secret|system|internal|"
       r"your)\s+instructions|your (?:system )?prompt)", "prompt|instruction|system message"),
    _r("exfiltration", 0.75, rf"\b{_XV}\b[^.!?\n]{{0,30}}?\b(?:your|the|all(?: the)?|any|every|internal|stored|"
       r"configured|server|system|admin|root|database|db|openai|production)\s+(?:[\w-]+\s+)?(?:api[ _-]?keys?|"
       r"secret[ _-]?keys?|access[ _-]?tokens?|auth(?:entication)?\s+tokens?|bearer tokens?|private keys?|"
       r"credentials|environment variables|env vars|\.env\b|passwords?|connection strings?|secrets)",
       "key|token|credential|variable|env|password|connection|secret"),
    _r("exfiltration", 0.6, r"\b(?:instructions?|rules|prompt|guidelines|directions|guidance|message)\s+(?:that\s+)?"
       r"you\s+(?:were|have been|'ve been|got|received)\s+(?:given|told|provided|programmed|sent)",
       "instruction|rules|prompt|guideline|direction|guidance|message"),
    _r("exfiltration", 0.5, rf"\b{_XV}\b[^.!?\n]{{0,20}}?\byour\s+(?:configuration|config|settings|setup|env|"
       r"environment|hidden prompt)\b", "your", strong=r"hidden prompt|\benv\b|environment", strong_weight=0.75),
    _r("exfiltration", 0.7, r"\b(?:keys|tokens|credentials|passwords|secrets|variables)\s+(?:do|can|did)\s+you\s+"
       r"(?:have|store|hold|use|know|see|access)", "you"),
    _r("exfiltration", 0.7, r"\b(?:dump|print|echo|leak)\s+(?:your|the)\s+(?:env|environment|memory|context|config)\b|"
       r"\bquote\s+(?:the\s+)?(?:first|previous|earlier|initial|hidden)\s+(?:message|prompt|instructions?)\b|"
       r"\bhidden\s+prompt\b", "dump|print|echo|leak|quote|hidden"),
    _r("exfiltration", 0.65, r"你(?:在[^，。,]{0,10})?(?:收到|接收到|得到|被给予)的(?:说明|指令|指示|规则|设定|提示)|系统给你的|"
       r"你的后台(?:配置|设置|设定|指令)|(?:后台|系统)(?:配置|设定)里(?:写了|有)什么", "收到|接收|得到|给你|后台|配置"),
    _r("exfiltration", 0.75, r"(?:把|将)(?:你|您)[^。！？!?\n]{0,8}?(?:token|令牌|密钥|秘钥|key|密码|配置|指令|提示词)"
       r"[^。！？!?\n]{0,6}?(?:发|给|告诉|输出|复制|贴)", "把你|将你|把您|将您"),
    _r("exfiltration", 0.75, r"\b(?:repeat|print|output|copy|echo|show)\s+(?:me\s+)?(?:the\s+|all\s+(?:the\s+)?|"
       r"everything\s*)?(?:words|text|content|lines|messages?)?\s*(?:above|before this|preceding|so far)\b",
       "above|before|preceding|so far"),
    _r("exfiltration", 0.6, r"\bwhat\s+(?:were|are|was)\s+you\s+(?:told|instructed|programmed|given)\b|"
       r"\bverbatim\b.{0,40}(?:instructions|prompt|above)|(?:instructions|prompt|above).{0,40}\bverbatim\b",
       "what|verbatim"),
    _r("exfiltration", 0.5, r"!\[[^\]]*\]\(\s*https?://[^)\s]*[?&][^)\s]*=", "]("),
    _r("exfiltration", 0.65, r"\bsend\s+(?:it|this|them|the\s+(?:conversation|chat|history|data|prompt|keys?|"
       r"secrets?|password|credentials)(?:\s+(?:history|log|transcript|so far))?|everything|all\s+(?:of\s+)?(?:the\s+)?\w+)\s+to\s+(?:https?://|\S+@\S+|"
       r"my\s+(?:email|server|webhook))", "send"),
    _r("exfiltration", 0.8, r"(?:告诉我|告诉|显示|输出|打印|泄露|透露|重复|复述|展示|给我|发给我|发送|列出|说出|念出|"
       r"公开|暴露|导出|翻译)[^。！？!?\n]{0,15}?(?:系统提示词?|系统指令|系统消息|初始指令|初始提示|原始指令|隐藏指令|"
       r"内部指令|提示词|你的指令|你的规则|你的设定|api\s*key|api\s*密钥|密钥|秘钥|访问令牌|令牌|token|环境变量|"
       r"内部配置|配置文件|数据库密码|管理员密码|后台密码|凭证|凭据)",
       "告诉|显示|输出|打印|泄露|透露|重复|复述|展示|给我|发送|列出|说出|念出|公开|暴露|导出|翻译"),
    _r("exfiltration", 0.7, r"(?:系统提示词?|初始指令|提示词|api\s*key|api\s*密钥|密钥|你的指令)(?:是什么|有哪些|的内容|"
       r"原文|全文)", "是什么|有哪些|内容|原文|全文"),
    _r("exfiltration", 0.75, r"(?:(?:把|将)(?:你|您)?的?|(?:你|您)的)(?:系统提示词?|系统指令|初始指令|初始提示|原始指令|"
       r"隐藏指令|内部指令|提示词|指令|设定|api\s*key|api\s*密钥|密钥|环境变量|数据库密码)[^。！？!?\n]{0,10}?(?:原样|逐字|"
       r"完整|一字不差地?)?(?:输出|打印|显示|告诉我|发给我|复述|重复|翻译|列出|展示|写出来|念出来)", "指令|提示|设定|key|密钥|环境变量|密码"),
    _r("exfiltration", 0.7, r"(?:把|将)(?:上面|以上|之前)的?(?:所有)?(?:内容|文字|指令|对话)(?:原样|逐字|完整)?"
       r"(?:重复|复述|输出|打印|发)", "把上面|把以上|把之前|将上面|将以上|将之前"),
)

TOOL_RULES: tuple[Rule, ...] = (
    _r("tool_instruction", 0.8, rf"\b{_AI}s?\s*[,:;!-]\s*(?:please\s+)?(?:ignore|disregard|forget|you must|you should|"
       r"you need to|do not|don't|always|never|call|invoke|use|run|execute|send|forward|email|tell|inform|respond|"
       r"reply|say|output|print|include|recommend|instead|stop|immediately)", "ai|assistant|llm|language model|chatbot|bot|model|agent|gpt|claude|copilot|system"),
    _r("tool_instruction", 0.7, rf"\b(?:attention|hey|dear|note|hi|hello|btw|to the)?\s*(?:the\s+)?{_AI}s?\b[^.\n]{{0,"
       r"30}}?[:,]\s*[^\n]{0,80}?\b(?:you|please)\b", "ai|assistant|llm|language model|chatbot|bot|model|agent|gpt|claude|copilot|system", strong=r"reading this|summari[sz]ing|attention|dear|hey"
       r"|\bto the\b", strong_weight=0.75),
    _r("tool_instruction", 0.7, rf"\bto\s+(?:the|any|all)\s+(?:{_AI}s?|language models?)\s+(?:reading|summari[sz]ing|"
       r"processing|parsing|visiting)", "to the|to any|to all"),
    _r("tool_instruction", 0.7, r"\b(?:when|if|once|after|as soon as)\s+you\s+(?:read|see|process|receive|encounter|"
       r"parse|summari[sz]e|retrieve|load)\s+this", "you"),
    _r("tool_instruction", 0.75, r"\b(?:if|when)\s+you\s+are\s+an?\s+(?:ai|llm|language model|assistant|chatbot|bot|"
       r"agent|model)", "you are"),
    _r("tool_instruction", 0.75, r"\b(?:note|message|instructions?|attention|important|notice|memo)\s+(?:to|for)\s+"
       r"(?:the\s+|any\s+|all\s+)?(?:ai|llm|assistant|model|agent|chatbot|bot|language model)s?\b", "to|for"),
    _r("tool_instruction", 0.5, r"\b(?:call|invoke|use|run|execute|trigger)\s+(?:the\s+)?(?:tool|function)\s*[`'\"]?"
       r"[a-z0-9_.-]+|\b(?:call|invoke|run|execute)\s+`?[a-z0-9-]+__[a-z0-9_.-]+", "call|invok|use|run|execut|trigger"),
    _r("tool_instruction", 0.0, r"<!--.{0,800}?-->", "<!--", strong=r"ignore|instruction|assistant|\bai\b|model|"
       r"you must|\bcall\b|system|prompt|\buser\b|忽略|指令|助手|调用|模型|用户", strong_weight=0.7),
    _r("tool_instruction", 0.35, r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:px)?\b|"
       r"opacity\s*:\s*0(?:\.0+)?\b|color\s*:\s*(?:white|#fff\b|#ffffff|transparent)", "display|visibility|font-"
       "size|opacity|color"),
    _r("tool_instruction", 0.45, r"\btell\s+the\s+(?:user|customer)\s+(?:that|to)\b|\b(?:recommend|suggest)\s+"
       r"(?:the\s+)?(?:user|customer)s?\s+(?:to\s+)?(?:visit|go to|click|buy|transfer|pay)", "tell|recommend|suggest"),
    _r("tool_instruction", 0.8, r"(?:ai|人工智能|助手|模型|机器人|智能客服|大模型|语言模型|agent)\s*[,:，!]\s*(?:请)?\s*"
       r"(?:忽略|无视|不要|必须|务必|调用|执行|使用|发送|转发|告诉用户|回复|输出|立即|马上)", "ai|人工智能|助手|模型|机器人|客服|agent"),
    _r("tool_instruction", 0.75, r"(?:致|给|写给|提醒|通知)(?:ai|人工智能|助手|智能助手|模型|大模型|语言模型|智能客服)"
       r"\s*[）)]?\s*[:：，,]", "致|给|提醒|通知"),
    _r("tool_instruction", 0.8, r"(?:ai|人工智能|助手|模型|大模型|机器人)\s*(?:请注意|注意|请|在回复时|在回答时|回答时|回复时)\s*"
       r"[:：,，]?\s*(?:必须|务必|调用|执行|忽略|不要|输出|回复|告诉|推荐|说)", "ai|人工智能|助手|模型|机器人|客服|agent"),
    _r("tool_instruction", 0.6, r"隐藏(?:文字|文本|内容|指令)", "隐藏"),
    _r("tool_instruction", 0.7, r"当你(?:读到|看到|收到|处理|阅读|解析)(?:这|此)", "当你"),
    _r("tool_instruction", 0.75, r"如果你是(?:一个)?(?:ai|人工智能|助手|模型|语言模型|大模型|机器人)", "如果你是"),
    _r("tool_instruction", 0.75, r"(?:给|致|写给)(?:ai|人工智能|助手|模型|大模型)的(?:指令|说明|消息|提示|话)", "ai的|人工智能的|助手的|模型的"),
    _r("tool_instruction", 0.6, r"(?:调用|执行|使用)\s*(?:工具|函数)?\s*[`'\"]?[a-z0-9-]+__[a-z0-9_.-]+", "__"),
    _r("tool_instruction", 0.45, r"告诉用户|(?:引导|建议|让)用户(?:去|访问|点击|转账|付款|购买)", "告诉用户|引导用户|建议用户|让用户"),
)

#: Rules that point at an encoding (the decoded rescan adds the real weight).
ENC_RULES: tuple[Rule, ...] = (
    _r("encoded_payload", 0.45, r"\b(?:base64|base-64|rot-?13|hex(?:adecimal)?|caesar|morse|binary|atbash|reversed?)"
       r"(?:\s+(?:encoded|decoded?|text|string|cipher))?\b.{0,40}?\b(?:decode|decipher|follow|execute|"
       r"obey)\b|\b(?:decode|decipher)\b.{0,40}?\b(?:base64|rot-?13|hex|caesar|morse|binary|"
       r"atbash)\b", "base64|base-64|rot|hex|caesar|morse|binary|atbash|revers|decode|decipher"),
    _r("encoded_payload", 0.45, r"(?:base64|rot13|十六进制|编码|解码|倒过来|反过来).{0,20}?(?:执行|照做|遵循|按照|服从|读)",
       "base64|rot13|十六进制|编码|解码|倒过来|反过来"),
)
